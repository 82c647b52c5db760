"""Accuracy suite: does the learngene help on real data?

    python -m bench.accuracy --preset omniglot --out bench/results/accuracy-omniglot

One collective run (or ``--collective DIR`` to reuse one), the criterion, then on novel classes never seen by
the collective model: every method on every setting (mean, 95% CI over episodes x seeds, parameters,
inherited parameters, epochs to 90% of final accuracy), a shots sweep and an individual-size sweep
(learngene vs scratch). Writes accuracy.json, accuracy.md and plots.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from learngene.collective_run import load_collective_run, run_collective  # noqa: E402
from learngene.config import load_config  # noqa: E402
from learngene.data import TaskStream  # noqa: E402
from learngene.evaluate import evaluate_methods  # noqa: E402
from learngene.gene import Learngene  # noqa: E402
from learngene.plots import plot_bars, plot_curves  # noqa: E402
from learngene.prepare import load_data  # noqa: E402
from learngene.report import methods_table  # noqa: E402
from learngene.run import select_gene  # noqa: E402
from learngene.safeio import (
    atomic_write_json,  # noqa: E402
    jsonable,  # noqa: E402
)

SIZES = {"small": ([16], []), "medium": ([32], [32]), "large": ([64], [64, 64])}


def _sweep(cfg, data, novel, network, gene, names, spec, settings, methods, individual=None):
    c = copy.deepcopy(cfg)
    c.evaluate.settings = list(settings)
    c.evaluate.headline = settings[0]
    if individual is not None:
        c.individual.before, c.individual.after = individual
    return evaluate_methods(c, data, novel, network, gene, names, spec, methods=methods, progress=False)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.accuracy", description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="omniglot")
    p.add_argument("--out", default=None)
    p.add_argument("--collective", help="reuse a finished collective run directory")
    p.add_argument("--gene", help="reuse a learngene selected from that run (skips the criterion)")
    p.add_argument("--settings", nargs="+", default=["5way1shot", "5way5shot", "20way1shot", "20way5shot"])
    p.add_argument("--episodes", type=int, default=17, help="per seed (17 x 3 seeds = 51 target tasks per setting)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=None,
                   help="methods of the main table (default: the preset's evaluate.methods)")
    p.add_argument("--shots", type=int, nargs="+", default=[1, 5, 10])
    p.add_argument("--sweep-episodes", type=int, default=10)
    p.add_argument("--no-sweeps", action="store_true", help="skip the shots and size sweeps")
    p.add_argument("--only-sweeps", action="store_true",
                   help="skip the main table and run only the sweeps (e.g. in a second process beside a main run)")
    p.add_argument("--curve-every", type=int, default=5, help="query accuracy every N epochs for the curves")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    args = p.parse_args(argv)
    out = Path(args.out or f"bench/results/accuracy-{args.preset}")
    out.mkdir(parents=True, exist_ok=True)
    tick = time.perf_counter()
    cfg = load_config(args.preset, overrides=args.overrides)
    cfg.evaluate.settings, cfg.evaluate.headline = list(args.settings), args.settings[0]
    cfg.evaluate.episodes, cfg.evaluate.seeds = args.episodes, list(args.seeds)
    cfg.evaluate.curve_every = args.curve_every
    data = load_data(cfg)
    coll_dir = Path(args.collective) if args.collective else out / "collective"
    if not args.collective:
        run_collective(cfg, coll_dir, overwrite=True, progress=False, data=data)
    t_collective = time.perf_counter() - tick
    if args.gene:
        gene = Learngene.load(args.gene)
        criterion = {"selected": gene.layer_names, **(gene.criterion or {})}
    else:
        gene, criterion = select_gene(coll_dir, out / "gene", cfg=cfg, data=data)
    run = load_collective_run(coll_dir)
    stream = TaskStream.from_manifest(data, run["stream_manifest"])
    novel = list(stream.split.novel)
    network, spec = run["network"], run["meta"]["input_spec"]
    names = network.conv_layer_names()
    if args.only_sweeps:
        main_res = {"headline": None, "methods": {}, "settings": {}}
    else:
        seen = run["report"].get("images_seen")
        main_res = evaluate_methods(cfg, data, novel, network, gene, names, spec, methods=args.methods,
                                    progress=True, stream=stream, cache_dir=coll_dir / "baselines",
                                    budget_images=int(seen) if cfg.train.memory_per_class > 0 and seen else None)
    ways = 5
    sweep_cfg = copy.deepcopy(cfg)
    sweep_cfg.evaluate.episodes = args.sweep_episodes
    # the sweeps draw their own episodes (other episode seeds), so they are evidence independent of the main table
    sweep_cfg.evaluate.seeds = [1000 + s for s in args.seeds]
    shots: dict[int, dict] = {}
    sizes: dict[str, dict] = {}
    for k in [] if args.no_sweeps else args.shots:
        res = _sweep(sweep_cfg, data, novel, network, gene, names, spec, [f"{ways}way{k}shot"], ["learngene", "scratch"])
        shots[k] = {m: {"acc_mean": r["acc_mean"], "acc_ci95": r["acc_ci95"]} for m, r in res["methods"].items()}
    for name, ind in ({} if args.no_sweeps else SIZES).items():
        res = _sweep(sweep_cfg, data, novel, network, gene, names, spec, [args.settings[0]], ["learngene", "scratch"],
                     individual=ind)
        sizes[name] = {"before": ind[0], "after": ind[1],
                       **{m: {k: r[k] for k in ("acc_mean", "acc_ci95", "params", "inherited_params")}
                          for m, r in res["methods"].items()}}
    coll = json.loads((coll_dir / "collective.json").read_text())
    result = {
        "command": "python -m bench.accuracy " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                    "cpu": platform.processor() or platform.machine()},
        "config": cfg.to_dict(),
        "split": stream.split.to_dict(),
        "collective": {"final": coll["final"], "open_world": coll["open_world"],
                       "forgetting_curve": coll["forgetting_curve"], "params": coll["final"]["params"]},
        "criterion": criterion,
        "individual": main_res,
        "shots_sweep": shots,
        "size_sweep": sizes,
        "seconds": {"collective": t_collective, "total": time.perf_counter() - tick},
    }
    atomic_write_json(out / "accuracy.json", jsonable(result))
    for setting, res in main_res["settings"].items():
        ms = res["methods"]
        plot_bars({m: r["acc_mean"] for m, r in ms.items()}, {m: r["acc_ci95"] for m, r in ms.items()},
                  out / f"bars_{setting}.png", title=f"{args.preset} {setting}")
        plot_curves({m: (r["curve_epochs"], r["curve"]) for m, r in ms.items()}, out / f"convergence_{setting}.png",
                    title=f"{args.preset} {setting}: query accuracy after each epoch")
    if shots:
        plot_curves({m: (list(shots), [shots[k][m]["acc_mean"] for k in shots]) for m in ("learngene", "scratch")},
                    out / "shots.png", xlabel="shots per class", title="5-way accuracy vs shots")
    if sizes:
        plot_curves({m: ([sizes[s]["learngene"]["params"] for s in sizes], [sizes[s][m]["acc_mean"] for s in sizes])
                     for m in ("learngene", "scratch")},
                    out / "sizes.png", xlabel="individual model parameters", title="accuracy vs individual size")
    lines = [f"### {args.preset}: `{result['command']}`", "",
             f"Collective: {coll['final']['params']:,} parameters, final task-aware accuracy "
             f"{coll['final']['average_accuracy']:.3f}, forgetting {coll['final']['forgetting']:.3f}, open-world AUROC "
             f"{(coll['open_world'] or {}).get('auroc', float('nan')):.3f}. Criterion `{criterion['name']}` chose "
             f"{', '.join(criterion['selected'])}. Seeds {args.seeds}; episodes per seed: "
             f"{'-' if args.only_sweeps else args.episodes} (main table), "
             f"{'-' if args.no_sweeps else args.sweep_episodes} (sweeps).", ""]
    for setting, res in main_res["settings"].items():
        lines += [f"#### {setting}", "", methods_table(res["methods"]), ""]
    if shots:
        lines += ["#### Shots sweep (5-way)", "", "| shots | learngene | scratch |", "|---|---|---|"]
    for k in shots:
        lines.append(f"| {k} | {shots[k]['learngene']['acc_mean']:.3f} ±{shots[k]['learngene']['acc_ci95']:.3f} | "
                     f"{shots[k]['scratch']['acc_mean']:.3f} ±{shots[k]['scratch']['acc_ci95']:.3f} |")
    if sizes:
        lines += ["", f"#### Individual size ({args.settings[0]})", "",
                  "| size | fresh before / after | params | learngene | scratch |", "|---|---|---|---|---|"]
    for s, r in sizes.items():
        lines.append(f"| {s} | {r['before']} / {r['after']} | {r['learngene']['params']:,} | "
                     f"{r['learngene']['acc_mean']:.3f} ±{r['learngene']['acc_ci95']:.3f} | "
                     f"{r['scratch']['acc_mean']:.3f} ±{r['scratch']['acc_ci95']:.3f} |")
    (out / "accuracy.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
