"""TLEG auxiliary-net levers, screened on source-class validation only (issue 16).

    python -m bench.vit_levers --epochs 10 --out runs/levers30-e10 random ancestry ancestry-a1 ancestry-hard

Each variant distils the learngene-seed-0 ancestry of ``--run`` (trained, or reused from that run's cache, with
``--set`` applied to the ``vit-glyphs`` preset) into an auxiliary net for ``--epochs`` epochs and appends its record
(the aux net's source val accuracy before and after distilling, the fit's R^2 with ``vit.aux_init = 'ancestry'``)
to ``OUT/levers.jsonl``.  Variants may run as parallel processes.  The novel classes are never looked at.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from learngene.config import load_config
from learngene.registry import DESCENDANT_METHODS
from learngene.vit.methods import _train_aux  # the run's own stage: same cache, seeds and fingerprint
from learngene.vit.run import _ancestry, _World
from learngene.vit.train import Recipe

VARIANTS = {
    "random": [],
    "ancestry": ["vit.aux_init='ancestry'"],
    "ancestry-a1": ["vit.aux_init='ancestry'", "vit.distill_alpha=1.0"],
    "ancestry-hard": ["vit.aux_init='ancestry'", "vit.distill='hard'"],
    "ancestry-T4": ["vit.aux_init='ancestry'", "train.distill_temperature=4.0"],
    "ancestry-sws4": ["vit.aux_init='ancestry'", "vit.rule='stagewise:4'"],
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--run", default="runs/vg30", help="the run directory whose seed-0 ancestry is the teacher")
    p.add_argument("--set", dest="overrides", action="append", default=["vit.ancestry_epochs=30"])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    base = load_config("vit-glyphs", None, a.overrides)
    world = _World(base, Path(a.run), Recipe.from_config(base, torch.device("cpu"), False),
                   [DESCENDANT_METHODS.get("truncated")])
    lineage = _ancestry(world, base.vit.learngene_seeds[0] if base.vit.learngene_seeds else base.seed)
    out = Path(a.out)
    for name in a.variants:
        cfg = load_config("vit-glyphs", None, [*a.overrides, f"vit.aux_epochs={a.epochs}", *VARIANTS[name]])
        tick = time.time()
        _, info = _train_aux(dataclasses.replace(lineage, cfg=cfg, out=out / name))
        rec = {"variant": name, "overrides": VARIANTS[name], "epochs": a.epochs, "val_acc": info["val_acc"],
               "init": {k: v for k, v in (info.get("init") or {}).items() if k != "r2"},
               "ancestry_val_acc": lineage.info["val_acc"], "params": info["params"], "wall_s": time.time() - tick}
        print(json.dumps(rec), flush=True)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "levers.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
