"""Hydra's registration of zoft's schema and resolvers (what ``train.py`` does before composing)."""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

from zoft.config.resolvers import register_resolvers
from zoft.config.schema import RunConfig


def register_configs() -> None:
    """Register the schema so ``conf/config.yaml`` can extend ``run_schema``, and the resolvers.

    Only the root is stored: group options are typed through it, and no schema entries show up
    among a group's options in Hydra's error messages.
    """
    ConfigStore.instance().store(name="run_schema", node=RunConfig)
    register_resolvers()
