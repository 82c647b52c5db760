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


# What each subcommand does and how it is typically called: `learngene CMD --help` prints both.
_DOCS: dict[str, tuple[str, str]] = {
    "collective": (
        "Stage 1: train the collective model on an open-world stream of tasks drawn from the source classes "
        "(growth, EWC, replay, gradient statistics), with a checkpoint after every epoch.",
        "learngene collective --preset omniglot --out runs/og\n"
        "learngene collective --preset omniglot --out runs/og --resume      # after Ctrl-C or a crash",
    ),
    "tune": (
        "Choose settings on pseudo-tasks from source classes the stream never used (never the novel classes): "
        "every combination of the --param values is trained and scored; tune.md is the ranked table.",
        "learngene tune --preset omniglot --param train.ewc_lambda=0,40 --param train.memory_per_class=0,5 "
        "--out runs/tune\n"
        "learngene tune ... --out runs/tune --resume                        # keep the finished trials",
    ),
    "presets": ("List the presets shipped with learngene, with what each is for.", "learngene presets"),
    "inspect": (
        "Show what an artifact holds: a learngene (CNN or transformer) as a table of layers, input, criterion "
        "and provenance; an individual model (from `learngene inherit`) by its classes and layers.",
        "learngene inspect runs/og/gene\nlearngene inspect runs/og/gene --json\nlearngene inspect my_model",
    ),
    "list": ("List what a config may name: registered models, sources, criteria, evaluation methods, presets.",
             "learngene list methods\nlearngene list"),
    "run": (
        "The whole paradigm in one directory: collective model -> criterion -> learngene -> individual models "
        "and baselines on novel-class few-shot tasks -> report.json, report.md and plots. vit-* presets run "
        "the transformer learngenes (TLEG, Heur-LG).",
        "learngene run --preset default --out runs/default\n"
        "learngene run --out runs/default --resume                          # the run's own config is reused\n"
        "learngene run --preset vit-smoke --out runs/vit",
    ),
    "select": (
        "Apply the criterion (criterion.name: validation, gradient_stability or fixed) to a finished collective "
        "run and save the chosen layers as a learngene (model.safetensors + learngene.json).",
        "learngene select --run runs/og --out runs/og-gene\n"
        "learngene select --run runs/og --out runs/og-gene2 --set criterion.name=gradient_stability",
    ),
    "evaluate": (
        "Compare individual models built on a learngene with the baselines on the same novel-class few-shot "
        "tasks; writes evaluation.json, evaluation.md and plots/.",
        "learngene evaluate --run runs/og --gene runs/og-gene --out runs/og-eval",
    ),
    "inherit": (
        "Train an individual model on your own few examples: fresh layers + the learngene + a new head. "
        "--support is a folder with one subfolder of images per class; images of any size or mode are "
        "converted to the gene's size, channels and normalization. The model is saved for `learngene predict`.",
        "learngene inherit --gene runs/og-gene --support my_support/ --query my_query/ --out my_model\n"
        "learngene inherit --gene runs/vit/genes/tleg --depth 6 --support my_support/ --out my_vit\n"
        "learngene inherit --gene glyphs-frequency --depth 6 --width 144 --support my_support/ --out my_vit  "
        "# a shipped gene (learngene list genes)",
    ),
    "make-gene": (
        "Turn your own trained ViT (a local timm checkpoint: .safetensors, or .pth/.pt/.bin read with "
        "torch.load(weights_only=True), or a save_ancestry directory) into a learngene with one command. "
        "--kind frequency needs no training: the low-frequency DCT coefficients of its weights, from which "
        "descendants of any depth and width are built. --kind tleg distils it into TLEG templates on the source "
        "classes of --preset (a transformer run reduced to the auxiliary net; minutes to hours).",
        "learngene make-gene --weights deit_tiny.pth --timm deit_tiny_patch16_224 --image-size 224 --out my_gene\n"
        "learngene make-gene --weights runs/vit/cache/ancestry --kind frequency --keep 0.5 --out my_gene\n"
        "learngene make-gene --weights deit_tiny.pth --timm deit_tiny_patch16_224 --kind tleg --preset vit-glyphs "
        "--out my_tleg",
    ),
    "predict": (
        "Classify images with a model written by `learngene inherit`. The score is the top softmax output, "
        "not a calibrated probability.",
        "learngene predict --model my_model photo.png folder/\nlearngene predict --model my_model folder/ --json",
    ),
}


def docs(name: str) -> dict[str, object]:
    """``add_parser`` keywords for a subcommand: its description and examples (printed by ``--help``)."""
    import textwrap

    description, examples = _DOCS[name]
    return {"description": textwrap.fill(description, 100), "epilog": "examples:\n" + "\n".join(f"  {line}" for line in examples.splitlines()),
            "formatter_class": argparse.RawDescriptionHelpFormatter}


SET_HELP = "override one config key, e.g. --set train.epochs=3 (repeatable; `learngene list` names the choices)"


def config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", help="a preset shipped with learngene (see `learngene presets`)")
    p.add_argument("--config", help="a TOML config file (applied after --preset)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=SET_HELP)
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
        stored = _stored_config(args)
        if stored is not None:
            from learngene.config import apply_overrides, config_from_dict
            from learngene.safeio import read_json

            logging.getLogger("learngene").info("resuming with the configuration stored in %s", stored)
            return apply_overrides(config_from_dict(read_json(stored, "run config")), overrides)
        raise ConfigError("give --preset NAME or --config FILE (see `learngene presets`)")
    from learngene.run import check_names  # every registry filled: a misspelt name is refused before any work

    return check_names(load_config(args.preset, args.config, overrides))


def _stored_config(args: argparse.Namespace):
    """With --resume, the config.json that the run in --out wrote when it started (a run keeps its own)."""
    from pathlib import Path

    if not getattr(args, "resume", False) or not getattr(args, "out", None):
        return None
    out = Path(args.out)
    return next((p for p in (out / "config.json", out / "collective" / "config.json") if p.is_file()), None)


def _toml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
