"""The optimizer registry: one record per ``optimizer=<name>`` option, read without importing torch.

An option is a file, ``conf/optimizer/<name>.yaml``, whose ``_target_`` names the optimizer class;
the class declares its settings and capabilities (:mod:`zoft.optim.spec`) in its body. This module
reads those declarations from the class's source with :mod:`ast` (following its base classes
inside zoft), so config validation, the protocol block, the reports and the docs know every option
in a fraction of a second, before torch loads. :func:`zoft.optim.build.build_optimizer` imports
the class itself; a test keeps what is read here equal to what the imported classes say.

Adding an optimizer is therefore: its module (the class with its two declarations), its
``conf/optimizer/<name>.yaml`` (``_target_`` and a value for every setting),
its protocol row, and its tests.
"""

from __future__ import annotations

import ast
import builtins
from ast import ClassDef
import importlib.util
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

from zoft.config.groups import group_options, option_file
from zoft.errors import ZoftUserError
from zoft.optim.spec import Capabilities, Setting

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # zoft/


@dataclass(frozen=True)
class OptimizerRecord:
    """What zoft knows about one optimizer option: ``target``, the class (``module.Class``);
    ``capabilities``; ``settings``, every ``optimizer.*`` key of the option in declaration order
    (``name`` aside); ``own``, those beyond the shared ones of its root class (MeZO's engine
    settings, or lr / weight_decay / max_grad_norm of the backprop optimizers), which the protocol
    block lists."""

    name: str
    target: str
    capabilities: Capabilities
    settings: dict[str, Setting] = field(default_factory=dict)
    own: tuple[str, ...] = ()


class DeclarationError(ZoftUserError, ValueError):
    """An optimizer option whose class or declarations cannot be read (the command line prints
    it as one line)."""


# --- reading a class's declarations from its source ------------------------------------------

_CONSTRUCTORS = {"Capabilities": Capabilities, "Setting": Setting}


def _literal(node: ast.expr, where: str) -> Any:
    """A literal, or a call of Capabilities/Setting with literal arguments."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _CONSTRUCTORS:
        args = [_literal(a, where) for a in node.args]
        kwargs = {k.arg: _literal(k.value, where) for k in node.keywords}
        try:
            return _CONSTRUCTORS[node.func.id](*args, **kwargs)
        except (TypeError, ValueError) as err:
            raise DeclarationError(f"{where}: {ast.unparse(node)[:80]}: {err}") from None
    if isinstance(node, ast.Dict):
        return {_literal(k, where): _literal(v, where) for k, v in zip(node.keys, node.values)}
    if isinstance(node, ast.Dict) and None in node.keys:
        raise DeclarationError(f"{where}: write each setting out (a ** unpacking is not read; a subclass's "
                               "settings add to its bases' by themselves)")
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise DeclarationError(f"{where}: declarations must be literals ({ast.unparse(node)})") from None


@lru_cache(maxsize=None)
def _module_tree(module: str) -> tuple[ast.Module, str]:
    if module.startswith("zoft."):
        path = PACKAGE_DIR.joinpath(*module.split(".")[1:]).with_suffix(".py")
        if not path.is_file():
            path = path.with_suffix("") / "__init__.py"  # a package
    else:
        spec = importlib.util.find_spec(module)
        path = Path(spec.origin) if spec and spec.origin else Path()
    if not path.is_file():
        raise DeclarationError(f"module {module!r} has no source file to read")
    return ast.parse(path.read_text(), filename=str(path)), str(path)


def _class_node(module: str, name: str) -> Optional[ClassDef]:
    tree, _ = _module_tree(module)
    return next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name), None)


def _imported_names(module: str, tree: ast.Module) -> dict[str, tuple[str, str]]:
    """name -> (module, name) of the ``from ... import`` statements (relative ones resolved)."""
    names = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.ImportFrom):
            source = stmt.module or ""
            if stmt.level:
                package = module.rsplit(".", stmt.level)[0]
                source = f"{package}.{source}" if source else package
            for alias in stmt.names:
                names[alias.asname or alias.name] = (source, alias.name)
    return names


def _base_locations(module: str, node: ClassDef) -> list[tuple[str, str]]:
    """(module, class) of each base class that zoft defines, in the class's order (torch's and
    other libraries' are left out: they declare nothing)."""
    tree, path = _module_tree(module)
    imported = _imported_names(module, tree)
    found = []
    for base in node.bases:
        if not isinstance(base, ast.Name) or base.id in vars(builtins):
            continue  # torch.optim.SGD and the like, object
        if _class_node(module, base.id) is not None:
            found.append((module, base.id))
        elif base.id in imported:
            source, name = imported[base.id]
            if source.startswith("zoft"):
                if _class_node(source, name) is None:
                    raise DeclarationError(f"{module}.{node.name}: its base {name} is not defined in {source} "
                                           f"({_module_tree(source)[1]}); import it from the module that defines "
                                           "it (e.g. from zoft.optim.mezo import MeZO)")
                found.append((source, name))
        else:
            raise DeclarationError(f"{module}.{node.name}: its base {base.id} is neither defined nor imported in {path}")
    return found


@lru_cache(maxsize=None)
def read_declarations(target: str) -> tuple[Optional[Capabilities], tuple[tuple[str, Setting], ...], frozenset[str]]:
    """(capabilities, settings, the keys declared by the root class) of ``module.Class``, as its
    source and its zoft base classes declare them (a subclass's entries replace its bases')."""
    module, _, name = target.rpartition(".")
    node = _class_node(module, name)
    if node is None:
        raise DeclarationError(f"{target}: no class {name!r} in {_module_tree(module)[1]}")
    capabilities, settings, root = None, {}, frozenset()
    bases = [read_declarations(".".join(base)) for base in _base_locations(module, node)]
    for base_caps, _, _ in bases:  # the first base that declares them, as attribute lookup finds
        capabilities = capabilities or base_caps
    for _, base_settings, base_root in reversed(bases):  # an earlier base's entry wins, as in the MRO
        settings.update(dict(base_settings))
        root = root | base_root
    own = {}
    for stmt in node.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            key, value = stmt.targets[0].id, stmt.value
        elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None:
            key, value = stmt.target.id, stmt.value
        else:
            continue
        if key == "capabilities":
            capabilities = _literal(value, target)
        elif key == "settings":
            own = _literal(value, target)
    settings.update(own)
    return capabilities, tuple(settings.items()), root or frozenset(own)


# --- the options ---------------------------------------------------------------------------------

def _record(name: str) -> OptimizerRecord:
    written = option_file("optimizer", name)
    target = written.get("_target_")
    if not isinstance(target, str):
        raise DeclarationError(f"conf/optimizer/{name}.yaml has no _target_ naming its optimizer class")
    capabilities, settings, root = read_declarations(target)
    if capabilities is None:
        raise DeclarationError(f"{target} (optimizer={name}) declares no capabilities")
    own = tuple(key for key, _ in settings if key not in root)
    return OptimizerRecord(name, target, capabilities, dict(settings), own)


def _load() -> dict[str, OptimizerRecord]:
    records = {name: _record(name) for name in group_options("optimizer")}
    # The paper's optimizers first (sgd, adam, mezo), then the others alphabetically.
    first = [n for n in ("sgd", "adam", "mezo") if n in records]
    return {n: records[n] for n in first + [n for n in records if n not in first]}


OPTIMIZERS: dict[str, OptimizerRecord] = _load()

# The keys of every option that are not settings: its name, and the class that
# zoft.optim.build.build_optimizer instantiates (``_target_``, as in Hydra; the settings go to
# the constructor arguments their declarations name, so hydra.utils.instantiate is not used).
RESERVED = ("name", "_target_")


def optimizer_record(name: str) -> OptimizerRecord:
    """The record of ``name``; a ``KeyError`` naming the valid options when there is none."""
    try:
        return OPTIMIZERS[name]
    except KeyError:
        raise KeyError(f"optimizer.name={name!r} is not valid; choose one of {', '.join(OPTIMIZERS)}") from None


def zeroth_order_names() -> tuple[str, ...]:
    """Every registered zeroth-order optimizer, in registry order."""
    return tuple(name for name, record in OPTIMIZERS.items() if record.capabilities.zeroth_order)


def takes_metric_objective(name: str) -> bool:
    """True when ``name`` can train on a non-differentiable objective (loss values only)."""
    record = OPTIMIZERS.get(name)
    return bool(record and record.capabilities.zeroth_order and not record.capabilities.forward_mode)


def is_zeroth_order_name(name: str) -> bool:
    """True when ``name`` is a registered zeroth-order optimizer."""
    record = OPTIMIZERS.get(name)
    return bool(record and record.capabilities.zeroth_order)
