"""CLI stages after the collective model: select, evaluate, inherit, predict, run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from learngene.cli_common import (
    OVERWRITE_HELP,
    command,
    config_args,
    docs,
    load_cfg,
    output_args,
    verbosity_args,
)
from learngene.errors import LearngeneError


def add_parsers(sub) -> None:

    p = sub.add_parser("run", help="the whole paradigm: collective -> criterion -> gene -> individuals + baselines",
                       **docs("run"))
    config_args(p)
    output_args(p)

    p = sub.add_parser("select", help="choose the learngene of a finished collective run and save it",
                       **docs("select"))
    p.add_argument("--run-dir", "--run", dest="run", required=True, help="collective run directory (under torchrun spell it --run-dir)")
    p.add_argument("--out", required=True, help="learngene directory to write")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override criterion keys, e.g. --set criterion.name=gradient_stability")
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    verbosity_args(p)

    p = sub.add_parser("evaluate", help="compare individual models with baselines on novel-class few-shot tasks",
                       **docs("evaluate"))
    p.add_argument("--run-dir", "--run", dest="run", required=True, help="collective run directory (under torchrun spell it --run-dir)")
    p.add_argument("--gene", required=True, help="learngene directory")
    p.add_argument("--out", required=True, help="where to write evaluation.json, evaluation.md and plots/")
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override the run's config for the evaluation, e.g. --set evaluate.episodes=50")
    verbosity_args(p)

    p = sub.add_parser("inherit", help="train an individual model on your own few examples", **docs("inherit"))
    p.add_argument("--gene", required=True, help="learngene directory")
    p.add_argument("--support", required=True, help="ImageFolder-style folder: one subfolder of images per class")
    p.add_argument("--query", help="optional folder of the same layout to measure accuracy")
    p.add_argument("--out", required=True, help="model directory to write")
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    p.add_argument("--preset", help="take the settings inherit reads from a preset of the gene's paradigm (CNN: "
                                    "[individual]; transformer: the descendants' training)")
    p.add_argument("--config", help="take the same settings from a TOML file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting inherit reads, e.g. individual.epochs=10 or vit.descendant_epochs=5 "
                        "(others are refused)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the fresh layers' initialization and of the training order (default 0)")
    p.add_argument("--depth", type=int, help="transformer genes: the descendant's number of blocks")
    p.add_argument("--width", type=int, help="transformer genes: the descendant's width (embedding channels; default "
                                             "the gene's); other widths by the gene's width rule")
    p.add_argument("--heads", type=int, help="transformer genes: the descendant's attention heads (default: the "
                                             "gene's count when it divides --width, else width / the gene's head width)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto (transformer genes; default cpu)")
    p.add_argument("--compare", choices=("scratch",),
                   help="also train the same architecture from scratch with the same budget and print both accuracies")
    reading_args(p)

    p = sub.add_parser("make-gene", help="turn your own trained ViT file into a frequency or TLEG learngene",
                       **docs("make-gene"))
    p.add_argument("--weights", required=True, help="a local .safetensors / .pth / .pt / .bin state dict, or a "
                                                    "directory written by save_ancestry (a run's cache/ancestry)")
    p.add_argument("--timm", default="", help="the timm model the state dict belongs to, e.g. deit_tiny_patch16_224 "
                                              "(not needed for a save_ancestry directory)")
    p.add_argument("--kind", choices=("frequency", "tleg"), default="frequency",
                   help="frequency: training-free DCT coefficients (default); tleg: distilled templates (trains)")
    p.add_argument("--keep", type=float, default=0.6,
                   help="frequency: fraction of DCT coefficients kept along depth and each width axis (default 0.6)")
    p.add_argument("--image-size", type=int, help="input size of its descendants (default: the model's own)")
    p.add_argument("--channels", type=int, help="input channels (default: the model's own)")
    p.add_argument("--mean", type=float, nargs="+", help="input normalization mean (default: timm's, else 0.5)")
    p.add_argument("--std", type=float, nargs="+", help="input normalization std (default: timm's, else 0.5)")
    p.add_argument("--preset", help="tleg: the vit-* preset whose source classes the templates are distilled on")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="tleg: override the preset's settings, e.g. vit.aux_epochs=30")
    p.add_argument("--out", required=True, help="learngene directory to write")
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    verbosity_args(p)

    p = sub.add_parser("predict", help="classify images with a model written by `learngene inherit`",
                       **docs("predict"))
    p.add_argument("--model", required=True, help="model directory written by `learngene inherit`")
    p.add_argument("images", nargs="+", help="image files or folders")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    reading_args(p, default_from="the model's")

    command("run")(_run)
    command("select")(_select)
    command("evaluate")(_evaluate)
    command("inherit")(_inherit)
    command("predict")(_predict)
    command("make-gene")(_make_gene)


def _invert_flag(text: str) -> bool | str:
    try:
        return {"true": True, "false": False, "auto": "auto"}[text.strip().lower()]
    except KeyError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected true, false or auto") from None


def reading_args(p: argparse.ArgumentParser, default_from: str = "the gene's") -> None:
    """--invert / --resize: override how image files are read (default: the input contract recorded in
    the gene or model)."""
    p.add_argument("--invert", type=_invert_flag, metavar="{true,false,auto}",
                   help=f"invert image intensities (dark ink on light paper -> bright on dark); auto: when an "
                        f"image's border is bright (default: {default_from} input contract)")
    p.add_argument("--resize", choices=("crop", "pad", "stretch"),
                   help=f"fit images to the model's size: centre crop, pad the short side, or stretch "
                        f"(default: {default_from} input contract)")


def _run(args: argparse.Namespace) -> int:
    from learngene.distributed import init_distributed
    from learngene.run import run_paradigm, run_summary

    cfg = load_cfg(args)
    dist, device = init_distributed(args.device)
    report = run_paradigm(cfg, args.out, resume=args.resume, overwrite=args.overwrite,
                          device=device, progress=not args.quiet, dist=dist)
    if dist.is_main:
        print(run_summary(cfg, report, args.out))
    return 0


def _run_cfg(run_dir: str, overrides: list[str]):
    from learngene.config import apply_overrides, config_from_dict
    from learngene.safeio import read_json

    run = Path(run_dir)
    if not (run / "config.json").is_file():
        if (run / "collective" / "config.json").is_file():
            hint = f"this looks like the output of `learngene run`: pass --run {run / 'collective'}"
        else:
            hint = "pass the --out directory of `learngene collective` (or the collective/ folder of `learngene run`)"
        raise LearngeneError(f"{run} is not a collective run directory (no config.json); {hint}")
    cfg = config_from_dict(read_json(run / "config.json", "run config"))
    return apply_overrides(cfg, overrides)  # same parsing and messages as --set of the other commands


def _select(args: argparse.Namespace) -> int:
    from learngene.run import select_gene

    cfg = _run_cfg(args.run, args.overrides)
    gene, result = select_gene(args.run, args.out, cfg=cfg, overwrite=args.overwrite, progress=not args.quiet)
    print(gene.describe())
    print(f"\nselected {result['selected']} by {result['name']}: {result['reason']}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from learngene.distributed import init_distributed
    from learngene.gene import Learngene
    from learngene.report import methods_table
    from learngene.run import evaluate_run, write_evaluation
    from learngene.safeio import check_writable_dir

    cfg = _run_cfg(args.run, args.overrides)
    dist, _ = init_distributed("cpu")  # individual trainings are small: sharded over ranks on the CPU
    gene = Learngene.load(args.gene)
    if dist.is_main:  # an unwritable --out fails now, not after the whole evaluation
        check_writable_dir(args.out, overwrite=args.overwrite, resumable=False, kind="evaluation")
    result = evaluate_run(args.run, gene, cfg=cfg, progress=not args.quiet, dist=dist)
    if not dist.is_main:
        return 0
    write_evaluation(result, args.out, run_dir=args.run, gene_dir=args.gene)
    for setting, res in result["settings"].items():
        print(f"\n{setting}:")
        print(methods_table(res["methods"]))
    print(f"\nreport: {Path(args.out) / 'evaluation.md'}")
    return 0


def _inherit(args: argparse.Namespace) -> int:
    from learngene.config import load_config
    from learngene.kinds import inherit
    from learngene.runtime import resolve_device

    cfg = load_config(args.preset, args.config, []) if (args.preset or args.config) else None
    result = inherit(args.gene, args.support, args.out, query_dir=args.query, cfg=cfg, overrides=args.overrides,
                     depth=args.depth, width=args.width, heads=args.heads, seed=args.seed, compare_scratch=args.compare == "scratch",
                     device=resolve_device(args.device), overwrite=args.overwrite, invert=args.invert,
                     resize=args.resize)
    msg = (f"trained {result['what']} on {result['images']} images of {len(result['classes'])} classes -> "
           f"{result['out']}")
    if result.get("query_accuracy") is not None:
        msg += f"; query accuracy {result['query_accuracy']:.3f} on {result['query_images']} images"
        cal = result.get("calibration")
        if cal:
            msg += (f"\nmean top score {cal['mean_score']:.3f}, calibration error (ECE) {cal['ece']:.3f}: the "
                    "scores `predict` prints are softmax outputs, not probabilities")
    print(msg)
    if result.get("ncm_query_accuracy") is not None:
        print(f"nearest-class-mean on the same descendant's untrained features: query accuracy "
              f"{result['ncm_query_accuracy']:.3f} (the gene used as it is)")
    if result.get("scratch"):
        acc = result["scratch"].get("query_accuracy")
        print("scratch (same architecture, random init, same budget): "
              + (f"query accuracy {acc:.3f}" if acc is not None else "no --query folder to measure it on"))
    return 0


def _predict(args: argparse.Namespace) -> int:
    import sys

    from learngene.prediction import SCORE_NOTE, predict

    rows = predict(args.model, args.images, invert=args.invert, resize=args.resize)
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))  # class names as written, not \u escapes
    else:
        width = max(len(r["image"]) for r in rows)
        for r in rows:
            print(f"{r['image']:<{width}}  {r['class']}  {r['score']:.3f}")
        print(f"note: {SCORE_NOTE}", file=sys.stderr)
    return 0


def _make_gene(args: argparse.Namespace) -> int:
    """A user's own ViT -> a learngene: frequency (no training) or TLEG (a run reduced to the auxiliary net)."""
    import shutil

    from learngene.errors import ConfigError
    from learngene.safeio import check_writable_dir

    if not Path(args.weights).exists():
        raise ConfigError(f"--weights {args.weights}: no such file or directory; give the local path of your model's "
                          ".safetensors / .pth state dict (with --timm naming its architecture) or of a save_ancestry "
                          "directory (nothing is downloaded)")
    if args.kind == "frequency" and (args.preset or args.overrides):
        raise ConfigError("--preset / --set are for --kind tleg (the frequency learngene trains nothing); drop them")
    if args.kind == "tleg" and not args.preset:
        raise ConfigError("--kind tleg distils the templates on a data set's source classes: give --preset "
                          "(e.g. vit-glyphs, or vit-imagenet with --set data.root=...)")
    out = check_writable_dir(args.out, overwrite=args.overwrite, resumable=False, kind="learngene")
    if args.kind == "frequency":
        from learngene.vit.frequency import frequency_from_weights

        gene = frequency_from_weights(args.weights, timm_name=args.timm, image_size=args.image_size,
                                      channels=args.channels, keep=args.keep, mean=args.mean, std=args.std)
    else:
        from learngene.config import load_config
        from learngene.kinds import load_gene
        from learngene.vit.run import run_vit

        quote = json.dumps
        cfg = load_config(args.preset, None, [
            *args.overrides, f"vit.ancestry_weights={quote(str(Path(args.weights).resolve()))}",
            f"vit.ancestry_timm={quote(args.timm)}", "evaluate.methods=['tleg']", "vit.widths=[]",
            "vit.depths=[2]", "evaluate.seeds=[0]", "vit.descendant_epochs=1", "vit.eval_epochs=[1]",
            "evaluate.episodes=1", "vit.fewshot_depths=[2]", "individual.epochs=1"])
        work = out.parent / f"{out.name}-run"  # the run (ancestry probe, auxiliary net) stays for --resume-like reuse
        run_vit(cfg, work, progress=not args.quiet)
        shutil.copytree(work / "genes" / "tleg", out, dirs_exist_ok=True)
        gene = load_gene(out)
    gene.save(out)
    print(gene.describe())
    print(f"\nlearngene written to {out}; inherit from it with: learngene inherit --gene {out} --depth D --width W "
          "--support DIR --out MODEL")
    return 0
