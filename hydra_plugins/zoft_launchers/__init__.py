"""zoft's Hydra launcher plugins (``conf/launcher/*.yaml``).

Hydra 1.3 instantiates a launcher only from a class under the ``hydra_plugins`` namespace
package, which it scans at start-up; zoft's launchers therefore live here, shipped next to
``zoft`` by pyproject.toml (``hydra_plugins`` has no ``__init__.py``: it is shared with the
other installed plugins).
"""
