"""Few-shot inheritance from transformer learngenes: recipes on N-way K-shot tasks, against NCM and scratch.

    # choose the recipe on pseudo-tasks of the open-world classes (never the novel ones)
    python -m bench.vit_fewshot --preset vit-glyphs --gene runs/vg/genes/tleg --depth 7 --classes open_world \\
        --episodes 10 --grid --out bench/results/vit-glyphs-fewshot/choose
    # the chosen recipe (the preset's [individual] / vit.fewshot_lr) on tasks of the novel classes, over learngenes
    python -m bench.vit_fewshot --preset vit-glyphs --gene runs/vg/genes/tleg runs/vg/lineages/seed-*/genes/tleg \\
        --depth 7 --classes novel --episodes 20 --out bench/results/vit-glyphs-fewshot/target

Every recipe is :func:`learngene.vit.fewshot.train_descendant` (what ``learngene inherit --depth`` runs) on the
same seeded episodes; ``scratch`` is the same architecture from random initialization with the same recipe and
seed; ``ncm`` is cosine nearest-class-mean on the descendant's untrained features (the gene used as it is).
Intervals: over the genes (learngene seeds) when several are given, else over episodes (labelled).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from learngene.config import load_config
from learngene.data import sample_episodes
from learngene.prepare import load_data, make_split
from learngene.runtime import derive_seed
from learngene.stats import format_ci
from learngene.vit.compare import aggregate
from learngene.vit.descendants import build_descendant, scratch_descendant
from learngene.vit.fewshot import fewshot_settings, ncm_accuracy, train_episode
from learngene.vit.gene import TransformerGene

# the recipes compared on the pseudo-tasks: name -> ([individual] overrides, vit.fewshot_lr)
GRID: dict[str, tuple[dict[str, Any], float]] = {
    # issue 16's weak step: a fresh linear head, the whole ViT fine-tuned from the start
    "finetune-linear": ({"classifier": "linear", "imprint": False, "head_epochs": 0, "epochs": 20,
                         "inherit_mode": "free", "augment": "none"}, 0.01),
    "probe-30": ({"head_epochs": 30, "epochs": 0, "augment": "affine"}, 0.01),
    "probe-30-lr.1": ({"head_epochs": 30, "epochs": 0, "augment": "affine"}, 0.1),
    "head10+ft20-lrs": ({"head_epochs": 10, "epochs": 20, "inherit_mode": "lr_scale", "lr_scale": 0.1,
                         "augment": "affine"}, 0.01),
    "head10+ft20-lrs-lr.03": ({"head_epochs": 10, "epochs": 20, "inherit_mode": "lr_scale", "lr_scale": 0.1,
                               "augment": "affine"}, 0.03),
    "head10+ft20-free": ({"head_epochs": 10, "epochs": 20, "inherit_mode": "free", "augment": "affine"}, 0.01),
    "head10+ft20-ewc": ({"head_epochs": 10, "epochs": 20, "inherit_mode": "ewc", "augment": "affine"}, 0.01),
    "head10+ft20-lrs-noaug": ({"head_epochs": 10, "epochs": 20, "inherit_mode": "lr_scale", "lr_scale": 0.1,
                               "augment": "none"}, 0.01),
    "head30+ft30-lrs": ({"head_epochs": 30, "epochs": 30, "inherit_mode": "lr_scale", "lr_scale": 0.1,
                         "augment": "affine"}, 0.01),
    # second round, around the first round's best (probe-30)
    "probe-60": ({"head_epochs": 60, "epochs": 0, "augment": "affine"}, 0.01),
    "probe-30-lr.03": ({"head_epochs": 30, "epochs": 0, "augment": "affine"}, 0.03),
    "probe-30-noaug": ({"head_epochs": 30, "epochs": 0, "augment": "none"}, 0.01),
    "head30+ft10-lrs": ({"head_epochs": 30, "epochs": 10, "inherit_mode": "lr_scale", "lr_scale": 0.1,
                         "augment": "affine"}, 0.01),
}


def _episodes(cfg, classes: str, ways: int, shots: int, queries: int, n: int):
    data = load_data(cfg)
    split = make_split(cfg, data)
    pool = list(getattr(split, classes))
    eps = sample_episodes(data, pool, min(ways, len(pool)), shots, queries, n,
                          seed=derive_seed(cfg.seed, "vit-fewshot-bench", classes, ways, shots))
    return data, pool, eps


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="vit-glyphs")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--gene", nargs="+", required=True, help="transformer gene directories (one per learngene seed)")
    p.add_argument("--depth", type=int, default=7)
    p.add_argument("--classes", choices=("open_world", "novel"), required=True)
    p.add_argument("--ways", type=int, default=20)
    p.add_argument("--shots", type=int, default=1)
    p.add_argument("--queries", type=int, default=5)
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--grid", action="store_true", help="compare the GRID recipes (else: the config's recipe)")
    p.add_argument("--only", nargs="*", help="GRID recipes to run (default: all)")
    p.add_argument("--no-scratch", action="store_true")
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    cfg = load_config(a.preset, None, a.overrides)
    data, pool, eps = _episodes(cfg, a.classes, a.ways, a.shots, a.queries, a.episodes)
    genes = [TransformerGene.load(g) for g in a.gene]
    base = fewshot_settings(cfg)
    recipes = {"config": (base, None)} if not a.grid else {
        name: (replace(base, **over, lr=lr), over) for name, (over, lr) in GRID.items() if not a.only or name in a.only}
    tensors = [ep.tensors(data, genes[0].input_spec) for ep in eps]
    ways = int(tensors[0][1].max()) + 1
    out: dict[str, Any] = {"preset": a.preset, "overrides": a.overrides, "genes": a.gene, "depth": a.depth,
                           "classes": a.classes, "pool": len(pool), "ways": ways, "shots": a.shots,
                           "queries": a.queries, "episodes": len(eps), "recipes": {}}
    ncm = [[ncm_accuracy(build_descendant(g, a.depth, ways, seed=derive_seed(e, "desc")).model, *t)
            for e, t in enumerate(tensors)] for g in genes]
    out["ncm"] = {"per_gene": ncm, **_summary(ncm)}
    print(f"ncm {out['ncm']['mean']:.3f}", flush=True)
    for name, (s, over) in recipes.items():
        tick = time.perf_counter()
        accs, scratch = [], []
        for g in genes:
            accs.append([train_episode(build_descendant(g, a.depth, ways, seed=derive_seed(e, "desc")), *t, s,
                                       seed=derive_seed(e, "train")) for e, t in enumerate(tensors)])
        if not a.no_scratch:
            g = genes[0]
            scratch = [[train_episode(scratch_descendant(g.vit_cfg, a.depth, ways, seed=derive_seed(e, "desc")), *t,
                                      s, seed=derive_seed(e, "train")) for e, t in enumerate(tensors)]]
        rec = {"settings": {"lr": s.lr, **({} if over is None else over)}, "per_gene": accs, **_summary(accs),
               "minus_ncm": _summary([[x - y for x, y in zip(ga, gn)] for ga, gn in zip(accs, ncm)]),
               "seconds": time.perf_counter() - tick}
        if scratch:
            rec["scratch"] = {"per_gene": scratch, **_summary(scratch)}
            rec["minus_scratch"] = _summary([[x - y for x, y in zip(accs[0], scratch[0])]])
        out["recipes"][name] = rec
        print(f"{name}: {rec['mean']:.3f} ({rec['seconds']:.0f} s)"
              + (f", scratch {rec['scratch']['mean']:.3f}" if scratch else ""), flush=True)
    out["choice"] = choice(out)
    where = Path(a.out)
    where.mkdir(parents=True, exist_ok=True)
    (where / "fewshot.json").write_text(json.dumps(out, indent=1))
    (where / "fewshot.md").write_text(render(out))
    print(render(out))
    return 0


def _summary(groups: list[list[float]]) -> dict[str, Any]:
    agg = aggregate(groups)
    return {"mean": agg["mean"], "ci95": agg["ci95"], "n": agg["n"], "ci_level": agg["ci_level"],
            "excludes_0": agg["excludes_0"]}


def choice(out: dict[str, Any]) -> dict[str, Any] | None:
    """The best recipe by mean accuracy and its paired difference to the runner-up on the same episodes (a tie
    when that interval holds 0: the ranking alone picked it)."""
    ranked = sorted(out["recipes"], key=lambda n: -out["recipes"][n]["mean"])
    if len(ranked) < 2:
        return None
    best, second = (out["recipes"][n]["per_gene"] for n in ranked[:2])
    diff = _summary([[x - y for x, y in zip(a, b)] for a, b in zip(best, second)])
    return {"best": ranked[0], "runner_up": ranked[1], "difference": diff, "tie": not diff["excludes_0"]}


def render(out: dict[str, Any]) -> str:
    lines = [f"{out['ways']}-way {out['shots']}-shot, {out['episodes']} episodes of the {out['classes']} classes "
             f"({out['pool']}), depth {out['depth']}, {len(out['genes'])} gene(s); intervals over "
             f"{out['ncm']['ci_level']}.", "",
             "| recipe | settings | descendant | minus NCM (points) | scratch, same recipe | minus scratch (points) |",
             "|---|---|---|---|---|---|",
             f"| ncm (no training) | - | {_acc(out['ncm'])} | - | - | - |"]
    for name, r in out["recipes"].items():
        settings = ", ".join(f"{k} {v}" for k, v in r["settings"].items())
        lines.append(f"| {name} | {settings} | {_acc(r)} | {_pts(r['minus_ncm'])} | "
                     f"{_acc(r['scratch']) if 'scratch' in r else '-'} | "
                     f"{_pts(r['minus_scratch']) if 'minus_scratch' in r else '-'} |")
    c = out.get("choice")
    if c:
        lines += ["", f"Best by mean: `{c['best']}`; paired against the runner-up `{c['runner_up']}` on the same "
                      f"episodes: {_pts(c['difference'])} points" + (" -- a tie: the ranking alone picked it." if
                                                                    c["tie"] else ".")]
    return "\n".join(lines) + "\n"


def _acc(d: dict[str, Any]) -> str:
    return f"{d['mean']:.3f} {format_ci(d['mean'], d['ci95'], d['n'])}"


def _pts(d: dict[str, Any]) -> str:
    ci = d["ci95"]
    cell = f"{100 * d['mean']:+.1f} " + (f"±{100 * ci:.1f}" if ci == ci else f"no CI (n = {d['n']})")
    return f"**{cell}**" if d["excludes_0"] else cell


if __name__ == "__main__":
    raise SystemExit(main())
