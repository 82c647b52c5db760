"""What every subcommand shares: the command table, the common options, logging set-up.

A module of its own so :mod:`learngene.cli` and :mod:`learngene.cli_stages` both import it and not each
other (no import cycle). Nothing here imports torch: ``learngene --help`` stays instant.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from learngene.errors import ConfigError

Command = Callable[[argparse.Namespace], int]
COMMANDS: dict[str, Command] = {}


def command(name: str) -> Callable[[Command], Command]:
    def deco(fn: Command) -> Command:
        COMMANDS[name] = fn
        return fn

    return deco


def config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", help="a preset shipped with learngene (see `learngene presets`)")
    p.add_argument("--config", help="a TOML config file (applied after --preset)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key, e.g. --set train.epochs=3 (repeatable)")
    p.add_argument("--data-root", help="dataset root (default: $LEARNGENE_DATA/<source> or ../shared/data/<source>)")


# One meaning in every command that writes a directory.
OVERWRITE_HELP = ("replace an earlier output of the same kind in a non-empty --out directory "
                  "(never a directory holding another kind: a gene, a model, a run)")


def output_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    verbosity_args(p)


def verbosity_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress bars, only warnings and errors")
    p.add_argument("--verbose", action="store_true", help="also debug messages (growth plans, checkpoints, caches)")


class _TqdmHandler(logging.Handler):
    """Log lines printed through tqdm.write, so they do not break the progress bars."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm.auto import tqdm

            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


def setup_logging(args: argparse.Namespace) -> None:
    """The CLI's logging: INFO by default, WARNING with --quiet, DEBUG with --verbose (the library only logs)."""
    level = logging.DEBUG if getattr(args, "verbose", False) else (
        logging.WARNING if getattr(args, "quiet", False) else logging.INFO)
    root = logging.getLogger("learngene")
    for h in list(root.handlers):
        if isinstance(h, _TqdmHandler):
            root.removeHandler(h)
    handler = _TqdmHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False




def load_cfg(args: argparse.Namespace):
    from learngene.config import load_config

    overrides = list(args.overrides)
    if getattr(args, "data_root", None):
        overrides.append(f"data.root={_toml_str(args.data_root)}")
    if args.preset is None and args.config is None:
        raise ConfigError("give --preset NAME or --config FILE (see `learngene presets`)")
    from learngene.run import check_names  # every registry filled: a misspelt name is refused before any work

    return check_names(load_config(args.preset, args.config, overrides))


def _toml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
