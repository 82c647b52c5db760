"""Evidence over collective seeds: the whole paradigm once per seed, then per-seed and pooled tables.

    python -m bench.seeds --preset omniglot --collective-seeds 0 1 2 --out bench/results/omniglot-seeds

Each collective seed has its own stream order, growth noise, exemplars, criterion run and learngene; every
method of one seed sees the same target episodes, so gains are paired differences. The pooled table treats all
(collective seed, episode seed, episode) target tasks together. Its intervals are taken over the per-seed means
(Student t with as many degrees of freedom as seeds minus one), which holds the variation between collective
models in full; the interval over tasks stands beside them, labelled as conditional on the collective models.
Every finished stage is kept in ``--out/seed<N>/``; a rerun continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from learngene.collective_run import run_collective  # noqa: E402
from learngene.config import load_config  # noqa: E402
from learngene.gene import Learngene  # noqa: E402
from learngene.prepare import load_data  # noqa: E402
from learngene.run import evaluate_run, select_gene  # noqa: E402
from learngene.safeio import (  # noqa: E402
    atomic_write_bytes,
    atomic_write_json,
    jsonable,  # noqa: E402
    read_json,
)
from learngene.stats import MIN_N_CI, format_ci, nested_ci95  # noqa: E402


def run_seed(preset: str, seed: int, overrides: list[str], out: Path, progress: bool) -> dict[str, Any]:
    cfg = load_config(preset, overrides=[*overrides, f"seed={seed}"])
    data = load_data(cfg)
    coll, gene_dir, ev = out / "collective", out / "gene", out / "evaluation.json"
    tick = time.perf_counter()
    if not (coll / "collective.json").is_file():
        resume = (coll / "checkpoints" / "latest.json").is_file()
        run_collective(cfg, coll, resume=resume, overwrite=True, progress=progress, data=data)
    if not (gene_dir / "learngene.json").is_file():
        select_gene(coll, gene_dir, cfg=cfg, data=data)
    gene = Learngene.load(gene_dir)
    if ev.is_file():
        return read_json(ev, "evaluation")
    result = evaluate_run(coll, gene, cfg=cfg, data=data, progress=progress)
    collective = read_json(coll / "collective.json", "collective report")
    result = {"seed": seed, "config": cfg.to_dict(), "individual": result,
              "gene": {"layers": gene.layer_names, "params": gene.num_params,
                       "effective_params": gene.effective_params, "effective_widths": gene.effective_widths},
              "collective": {"final": collective["final"], "memory": collective.get("memory"),
                             "images_seen": collective.get("images_seen")},
              "criterion": gene.criterion, "seconds": time.perf_counter() - tick}
    atomic_write_json(ev, jsonable(result))
    return result


def _accs(r: dict[str, Any], setting: str, m: str) -> list[float]:
    return r["individual"]["settings"][setting]["methods"][m]["accuracies"]


def paired(per_seed: list[dict[str, Any]], setting: str, a: str, b: str) -> dict[str, Any]:
    """``a - b`` on the same target tasks: per-task differences nested in collective seeds (stats.nested_ci95)."""
    return nested_ci95([[x - y for x, y in zip(_accs(r, setting, a), _accs(r, setting, b))] for r in per_seed])


def pool(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """Per setting and method: the mean with its interval over collective seeds (the outer random stage: per-seed
    means, Student t with seeds - 1 df) and, labelled, over all target tasks; paired gains over scratch and gaps to
    joint at both levels. Verdicts (``gain_significant``) use the interval over seeds."""
    settings = sorted({s for r in per_seed for s in r["individual"]["settings"]})
    out: dict[str, Any] = {}
    for setting in settings:
        methods: dict[str, Any] = {}
        names = list(per_seed[0]["individual"]["settings"][setting]["methods"])
        for m in names:
            acc = nested_ci95([_accs(r, setting, m) for r in per_seed])
            row = {"acc_mean": acc["mean"], "seed_ci95": acc["ci95"], "seeds": acc["n"], "seed_means": acc["means"],
                   "acc_ci95": acc["tasks_ci95"], "n": acc["tasks_n"]}
            if "scratch" in names and m != "scratch":
                g = paired(per_seed, setting, m, "scratch")
                row.update(gain_vs_scratch=g["mean"], gain_seed_ci95=g["ci95"], gain_ci95=g["tasks_ci95"],
                           gain_seed_means=g["means"], gain_significant=g["excludes_0"])
            if "joint" in names and m != "joint":
                g = paired(per_seed, setting, m, "joint")
                row.update(gap_to_joint=g["mean"], gap_seed_ci95=g["ci95"], gap_to_joint_ci95=g["tasks_ci95"],
                           gap_seed_means=g["means"])
            ref = per_seed[0]["individual"]["settings"][setting]["methods"][m]
            row["params"] = [r["individual"]["settings"][setting]["methods"][m].get("params") for r in per_seed]
            if "same_as" in ref:
                row["same_as"] = [r["individual"]["settings"][setting]["methods"][m].get("same_as") for r in per_seed]
            methods[m] = row
        out[setting] = methods
    return out


def _points(ci: float) -> str:
    return f"no CI (n < {MIN_N_CI})" if ci != ci else f"±{100 * ci:.1f}"


def markdown(per_seed: list[dict[str, Any]], pooled: dict[str, Any]) -> str:
    lines = ["# Evidence over collective seeds", ""]
    for r in per_seed:
        f = r["collective"]["final"]
        lines.append(f"- seed {r['seed']}: gene {', '.join(r['gene']['layers'])} ({r['gene']['params']:,} params, "
                     f"{r['gene']['effective_params']:,} effective); collective {f['params']:,} params "
                     f"({f['effective_params']:,} effective), widths {f['widths']} (effective "
                     f"{f['effective_widths']}), task-aware acc {f['average_accuracy']:.3f}, class-IL "
                     f"{f['average_accuracy_class_incremental']:.3f}")
    for setting, methods in pooled.items():
        lines += ["", f"## {setting}", "",
                  "| method | mean | 95% CI over collective seeds | per seed | CI over tasks (conditional) | "
                  "paired gain vs scratch (seeds CI; tasks CI) | gap to joint (seeds CI; tasks CI) | params |",
                  "|---|---|---|---|---|---|---|---|"]
        for m, row in methods.items():
            gain = (f"{100 * row['gain_vs_scratch']:+.1f} {_points(row['gain_seed_ci95'])}"
                    f"{' *' if row['gain_significant'] else ''}; {_points(row['gain_ci95'])}"
                    if "gain_vs_scratch" in row else "")
            gap = (f"{100 * row['gap_to_joint']:+.1f} {_points(row['gap_seed_ci95'])}; "
                   f"{_points(row['gap_to_joint_ci95'])}" if "gap_to_joint" in row else "")
            name = m + (f" (= {row['same_as'][0]} in some seeds)" if any(row.get("same_as") or []) else "")
            params = "/".join(f"{p:,}" for p in row["params"] if p is not None)
            seed_ci = format_ci(row["acc_mean"], row["seed_ci95"], row["seeds"])
            lines.append(f"| {name} | {row['acc_mean']:.3f} | {seed_ci} | "
                         + " / ".join(f"{v:.3f}" for v in row["seed_means"])
                         + f" | {format_ci(row['acc_mean'], row['acc_ci95'], row['n'])} | {gain} | {gap} | {params} |")
    lines += ["", f"{len(per_seed)} collective seeds. Intervals over collective seeds: the per-seed means, Student t "
              "with seeds - 1 degrees of freedom (the variation between collective models in full); intervals over "
              "tasks treat every target task as independent and are conditional on these collective models. Gains "
              "and gaps are in points (paired per target task, then averaged per seed); * marks a gain whose "
              "interval over seeds excludes 0."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.seeds", description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="omniglot")
    p.add_argument("--collective-seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", required=True)
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    out = Path(args.out)
    per_seed = [run_seed(args.preset, s, args.overrides, out / f"seed{s}", not args.quiet)
                for s in args.collective_seeds]
    pooled = pool(per_seed)
    atomic_write_json(out / "seeds.json", jsonable({"preset": args.preset, "overrides": args.overrides,
                                                   "per_seed": per_seed, "pooled": pooled}))
    text = markdown(per_seed, pooled)
    atomic_write_bytes(out / "seeds.md", text.encode())
    print(text)
    print(json.dumps({"out": str(out)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
