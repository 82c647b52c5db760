"""Evidence over collective seeds: the whole paradigm once per seed, then per-seed and pooled tables.

    python -m bench.seeds --preset omniglot --collective-seeds 0 1 2 --out bench/results/omniglot-seeds

Each collective seed has its own stream order, growth noise, exemplars, criterion run and learngene; every
method of one seed sees the same target episodes, so gains are paired differences. The pooled table treats all
(collective seed, episode seed, episode) target tasks together, and also gives the interval over the per-seed
means (Student t with as many degrees of freedom as seeds minus one), which holds the variation between collective
models in full. Every finished stage is kept in ``--out/seed<N>/``; a rerun continues where it stopped.
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
from learngene.stats import mean_ci95  # noqa: E402


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


def _per_task(runs: list[dict[str, Any]]) -> dict[tuple, float]:
    return {(r["seed"], r["episode"]): r["accuracy"] for r in runs}


def pool(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """Pooled means, CIs over all target tasks and over seed means, paired gains over scratch."""
    settings = sorted({s for r in per_seed for s in r["individual"]["settings"]})
    out: dict[str, Any] = {}
    for setting in settings:
        methods: dict[str, Any] = {}
        names = list(per_seed[0]["individual"]["settings"][setting]["methods"])
        for m in names:
            accs, diffs, seed_means, gaps = [], [], [], []
            for r in per_seed:
                ms = r["individual"]["settings"][setting]["methods"]
                mine = ms[m]["accuracies"]
                accs += mine
                seed_means.append(sum(mine) / len(mine))
                if "scratch" in ms:
                    diffs += [a - b for a, b in zip(mine, ms["scratch"]["accuracies"])]
                if "joint" in ms:
                    gaps += [a - b for a, b in zip(mine, ms["joint"]["accuracies"])]
            mean, ci = mean_ci95(accs)
            smean, sci = mean_ci95(seed_means)
            row = {"acc_mean": mean, "acc_ci95": ci, "n": len(accs), "seed_means": seed_means,
                   "seed_ci95": sci}
            if diffs and m != "scratch":
                g, gci = mean_ci95(diffs)
                row.update(gain_vs_scratch=g, gain_ci95=gci, gain_significant=bool(abs(g) > gci))
            if gaps and m != "joint":
                g, gci = mean_ci95(gaps)
                row.update(gap_to_joint=g, gap_to_joint_ci95=gci)
            ref = per_seed[0]["individual"]["settings"][setting]["methods"][m]
            row["params"] = [r["individual"]["settings"][setting]["methods"][m].get("params") for r in per_seed]
            if "same_as" in ref:
                row["same_as"] = [r["individual"]["settings"][setting]["methods"][m].get("same_as") for r in per_seed]
            methods[m] = row
        out[setting] = methods
    return out


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
                  "| method | pooled acc ±95% CI | CI over seed means | per seed | paired gain vs scratch | "
                  "gap to joint | params |", "|---|---|---|---|---|---|---|"]
        for m, row in methods.items():
            gain = (f"{100 * row['gain_vs_scratch']:+.1f} ±{100 * row['gain_ci95']:.1f}"
                    + (" *" if row["gain_significant"] else "")) if "gain_vs_scratch" in row else ""
            gap = (f"{100 * row['gap_to_joint']:+.1f} ±{100 * row['gap_to_joint_ci95']:.1f}"
                   if "gap_to_joint" in row else "")
            name = m + (f" (= {row['same_as'][0]} in some seeds)" if any(row.get("same_as") or []) else "")
            params = "/".join(f"{p:,}" for p in row["params"] if p is not None)
            lines.append(f"| {name} | {row['acc_mean']:.3f} ±{row['acc_ci95']:.3f} | ±{row['seed_ci95']:.3f} | "
                         + " / ".join(f"{v:.3f}" for v in row["seed_means"]) + f" | {gain} | {gap} | {params} |")
    lines += ["", "Gains and gaps are in points (paired per target task); * marks a CI that excludes 0."]
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
