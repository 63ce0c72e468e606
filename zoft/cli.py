"""``zoft <command>``: the command-line dispatcher (``python -m zoft <command>`` works too).

Each subcommand lives in its own module, which provides ``add_parser(subparsers)`` and sets
``func`` on its parser. Training itself is ``python train.py`` (Hydra).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import Optional, Sequence

from zoft.errors import ZoftUserError

# Modules that add subcommands (a module may add several).
COMMAND_MODULES = ("zoft.replay", "zoft.report.command", "zoft.lmbff.commands")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zoft", description="zoft tools (training itself: python train.py)")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="command")
    for module in COMMAND_MODULES:
        importlib.import_module(module).add_parser(subparsers)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run one subcommand; a user error prints one line and exits with status 2."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ZoftUserError as err:
        if os.environ.get("ZOFT_DEBUG") == "1":  # as train.py: the traceback, for a bug report
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
