"""Command-line interface: one subcommand per stage of the paradigm, plus `run` for all of them.

Every user-facing problem is a LearngeneError and is printed as one clear line (exit code 2), never as a
traceback; set LEARNGENE_DEBUG=1 to see the traceback anyway.
"""

from __future__ import annotations

import argparse
import os
import sys

# Before torch is imported: on small CPU machines spinning OpenMP workers slow small tensor ops 10-50x.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
from collections.abc import Sequence
from pathlib import Path

from learngene import __version__, cli_stages
from learngene.cli_common import (
    COMMANDS,
    OVERWRITE_HELP,
    command,
    config_args,
    docs,
    load_cfg,
    output_args,
    setup_logging,
    verbosity_args,
)
from learngene.errors import ConfigError, DiskFullError, LearngeneError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="learngene",
        description="Learngene: collective model -> criterion -> learngene -> individual models.",
    )
    parser.add_argument("--version", action="version", version=f"learngene {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("collective", help="train the collective model on an open-world task stream", **docs("collective"))
    config_args(p)
    output_args(p)

    p = sub.add_parser("tune", help="choose settings on source-class pseudo-tasks (never the novel classes)",
                       **docs("tune"))
    config_args(p)
    p.add_argument("--param", dest="params", action="append", default=[], metavar="KEY=V1,V2,...",
                   help="a config key and the values to try, e.g. train.ewc_lambda=10,20,40 (repeatable: the grid)")
    p.add_argument("--out", required=True, help="directory for tune.json, tune.md and the finished trials")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted tuning in --out: finished trials are kept, the others trained")
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="collective seeds per combination (default 0)")
    p.add_argument("--setting", help="pseudo-task setting, e.g. 20way1shot (default: evaluate.headline)")
    p.add_argument("--episodes", type=int, default=20, help="pseudo-tasks per seed (default 20)")
    p.add_argument("--score", choices=("ncm", "individual"), default="ncm",
                   help="rank by the collective model's NCM accuracy (collective settings) or by the learngene's "
                        "individual models (criterion / individual settings); default ncm")
    p.add_argument("--method", default="learngene",
                   help="with --score individual: the comparison method whose pseudo-task accuracy ranks the trials "
                        "(e.g. scratch for evaluate.method_lr.scratch, protonet for baseline.protonet_lr/scale); "
                        "default learngene")
    p.add_argument("--joint", action="store_true",
                   help="also train the joint reference per seed and report each trial's gap to it")
    verbosity_args(p)

    sub.add_parser("presets", help="list the shipped presets", **docs("presets"))

    p = sub.add_parser("inspect", help="describe a learngene or an individual model", **docs("inspect"))
    p.add_argument("gene", help="a learngene directory (or its learngene.json), or a model directory")
    p.add_argument("--json", action="store_true", help="print the raw manifest as JSON")

    p = sub.add_parser("list", help="list what a config may name: models, sources, criteria, methods, ...",
                       **docs("list"))
    p.add_argument("what", nargs="?", choices=LISTABLE, help="one registry (default: all of them)")

    cli_stages.add_parsers(sub)
    return parser


@command("collective")
def _collective(args: argparse.Namespace) -> int:
    from learngene.collective_run import dump, run_collective
    from learngene.distributed import init_distributed

    cfg = load_cfg(args)
    dist, device = init_distributed(args.device)
    report = run_collective(cfg, args.out, resume=args.resume, overwrite=args.overwrite, device=device,
                            progress=not args.quiet, dist=dist)
    if not dist.is_main:
        return 0
    final = report["final"]
    ow = report.get("open_world") or {}
    print(dump({"out": str(Path(args.out) / "collective.json"), "final": final,
                "open_world_auroc": ow.get("auroc"), "open_world_fpr95": ow.get("fpr95")}))
    return 0


@command("tune")
def _tune(args: argparse.Namespace) -> int:
    from learngene.tune import parse_param, tune

    if args.episodes < 1:
        raise ConfigError(f"--episodes must be >= 1, got {args.episodes}")
    cfg = load_cfg(args)
    params = [parse_param(p) for p in args.params]
    summary = tune(cfg, params, args.out, seeds=args.seeds, setting=args.setting, episodes=args.episodes,
                   joint=args.joint, progress=not args.quiet, score=args.score, method=args.method,
                   resume=args.resume, overwrite=args.overwrite)
    from learngene.tune import tune_markdown

    print(tune_markdown(summary))
    return 0


@command("presets")
def _presets(args: argparse.Namespace) -> int:
    from learngene.config import list_presets, preset_description

    names = list_presets()
    width = max(map(len, names))
    for name in names:
        print(f"{name.ljust(width)}  {preset_description(name)}")
    return 0


@command("inspect")
def _inspect(args: argparse.Namespace) -> int:
    import json

    from learngene.kinds import load_gene
    from learngene.safeio import artifact_kind, read_json

    target = Path(args.gene)
    held = artifact_kind(target.parent if target.name == "model.json" else target)
    if held == "individual model":  # a model from `learngene inherit`: describe it rather than refuse it
        from learngene.prediction import describe_model

        where = target.parent if target.name == "model.json" else target
        print(json.dumps(read_json(where / "model.json", "model manifest"), indent=2, ensure_ascii=False)
              if args.json else describe_model(where))
        return 0
    if held in ("run", "collective run", "tuning run"):
        hint = (f"its learngene is {target / 'gene'}: learngene inspect {target / 'gene'}" if held == "run" else
                f"choose its learngene first: learngene select --run {target} --out GENE_DIR")
        raise LearngeneError(f"{target} holds {'an' if held[0] in 'aeiou' else 'a'} {held}, not a learngene; {hint}")
    gene = load_gene(args.gene)
    print(json.dumps(gene.manifest(), indent=2) if args.json else gene.describe())
    return 0


def _after_interrupt(args: argparse.Namespace) -> str:
    """The one way on after Ctrl-C or a full disk: --resume where a checkpoint was written, else a fresh start."""
    out = getattr(args, "out", None)
    if out is None or not hasattr(args, "resume"):
        return "run the same command again"
    out = Path(out)
    saved = any((d / "checkpoints" / "latest.json").is_file() or (d / "collective.json").is_file()
                for d in (out, out / "collective")) or (out / "trials").is_dir()  # a tuning run's finished trials
    if saved:
        return "continue with the same command and --resume"
    return (f"nothing was saved yet in {out}; start again with the same command and --overwrite "
            "(--resume has no checkpoint to continue from)")


LISTABLE = ("models", "architectures", "sources", "criteria", "methods", "vit-methods", "gene-kinds", "presets", "genes")


def _list_genes() -> None:
    """The learngenes shipped with the package: name, kind, stored parameters, file size, what they are."""
    from learngene.shipped import list_shipped, shipped_card, shipped_path

    print("genes:  (shipped with the package: learngene inherit --gene NAME ..., lg.load_gene(NAME))")
    names = list_shipped()
    width = max((len(n) for n in names), default=0)
    for name in names:
        card = shipped_card(name)
        size = sum(p.stat().st_size for p in shipped_path(name).iterdir() if p.is_file())
        print(f"  {name.ljust(width)}  {card.get('kind', '?')}, {card.get('stored_params', 0):,} stored parameters, "
              f"{size / 1e6:.2f} MB: {card.get('summary', '')}".rstrip())


@command("list")
def _list(args: argparse.Namespace) -> int:
    """Registered names, so a user can see what ``--set model.name=...`` etc. accept (their own ones too)."""
    if args.what == "genes":  # no torch needed: a quick answer
        _list_genes()
        return 0
    from learngene import kinds, registry, run  # noqa: F401 - they import every module that registers a built-in
    from learngene.config import list_presets, preset_description

    tables = {"models": registry.MODELS, "architectures": registry.ARCHITECTURES, "sources": registry.SOURCES,
              "criteria": registry.CRITERIA, "methods": registry.METHODS, "vit-methods": registry.DESCENDANT_METHODS,
              "gene-kinds": registry.GENE_KINDS}
    for what in [args.what] if args.what else LISTABLE:
        if what == "genes":
            _list_genes()
            continue
        if what == "presets":
            names = [(n, preset_description(n)) for n in list_presets()]
        elif what in ("methods", "vit-methods"):
            names = [(n, tables[what].get(n).description) for n in tables[what].in_order()]
        else:
            names = [(n, "") for n in tables[what].names()]
        print(f"{what}:")
        width = max((len(n) for n, _ in names), default=0)
        for name, text in names:
            print(f"  {name.ljust(width)}  {text}".rstrip())
    return 0


def _reader_gone() -> int:
    """stdout's reader closed the pipe (``learngene predict ... | head -1``): stop quietly, as Unix tools do.

    Python's advice: point stdout at /dev/null so the flush at exit does not raise a second time. The status is
    128 + SIGPIPE, what a shell reports for a tool stopped the same way.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout is not a real file (tests capture it)
        pass
    return 141


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args)
    try:
        rc = COMMANDS[args.command](args)
        sys.stdout.flush()  # here, so a reader that went away (`| head -1`) is met below, not at exit
        return rc
    except BrokenPipeError:
        return _reader_gone()
    except LearngeneError as err:
        if os.environ.get("LEARNGENE_DEBUG"):
            raise
        more = f"; then {_after_interrupt(args)}" if isinstance(err, DiskFullError) else ""
        print(f"learngene {args.command}: error: {err}{more}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"learngene {args.command}: interrupted; {_after_interrupt(args)}", file=sys.stderr)
        return 130
    finally:
        if "torch.distributed" in sys.modules:  # a light command (presets) never loaded torch: keep it so
            from learngene.distributed import shutdown

            shutdown()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
