"""`learngene inherit` on a user's raw image files: does the gene's input contract read them as it was trained?

    python -m bench.inherit_files --gene runs/og-gene --tasks 20 --out bench/results/inherit-files

Every task draws ``ways`` characters from alphabets the gene never saw (default: the omniglot preset's novel ones,
Greek, Latin and Tagalog), ``shots`` support and ``queries`` query drawings each, and writes them exactly as the
dataset publishes them (black ink on white paper, 105 x 105 PNG) into ImageFolder trees. The same tasks then go
through the library's ``inherit`` (the CLI's ``learngene inherit``) three ways:

* ``contract``: the raw folders, read by the gene's recorded input contract (the default);
* ``by hand``: the folders inverted by hand first (bright ink on black, the gene's polarity), read with
  ``invert=False``: what a careful user had to do before the contract existed;
* ``ignored``: the raw folders read with ``invert=False``: what ``inherit`` did before.

The same model untrained (``individual.epochs=0``: its imprinted cosine head is nearest-class-mean on the gene's
pooled features) is scored beside each reading, on the same files.
Differences are paired per task. The individual settings are the library's defaults (what ``learngene inherit``
uses without --preset/--set) unless ``--preset`` names a preset.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import tempfile
import zipfile
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from PIL import Image, ImageOps  # noqa: E402

from learngene.config import load_config  # noqa: E402
from learngene.data.sources import default_data_root  # noqa: E402
from learngene.kinds import inherit, load_gene  # noqa: E402
from learngene.safeio import atomic_write_bytes, atomic_write_json, jsonable  # noqa: E402
from learngene.stats import mean_ci95  # noqa: E402

ZIPS = ("images_background_small1.zip", "images_background_small2.zip")


def characters(root: Path, alphabets: list[str]) -> dict[str, list[tuple[Path, str]]]:
    """``alphabet/characterNN`` -> its drawings as (zip file, member name), from both zips (deduplicated)."""
    out: dict[str, list[tuple[Path, str]]] = {}
    for name in ZIPS:
        z = root / name
        with zipfile.ZipFile(z) as zf:
            for member in sorted(zf.namelist()):
                parts = member.split("/")
                if len(parts) == 4 and parts[1] in alphabets and member.endswith(".png"):
                    key = f"{parts[1]}/{parts[2]}"
                    if key not in out or z == out[key][0][0]:
                        out.setdefault(key, []).append((z, member))
    return out


def write_task(root: Path, task: dict[str, list[tuple[Path, str]]], shots: int, rng: random.Random) -> None:
    """support/ and query/ ImageFolder trees, raw and inverted by hand, of one task."""
    for cls, drawings in task.items():
        picks = rng.sample(drawings, len(drawings))
        for split, items in (("support", picks[:shots]), ("query", picks[shots:])):
            for i, (z, member) in enumerate(items):
                with zipfile.ZipFile(z) as zf:
                    raw = zf.read(member)
                name = cls.replace("/", "_")
                for kind in ("raw", "by_hand"):
                    d = root / kind / split / name
                    d.mkdir(parents=True, exist_ok=True)
                    if kind == "raw":
                        (d / f"{i}.png").write_bytes(raw)
                    else:
                        ImageOps.invert(Image.open(io.BytesIO(raw)).convert("L")).save(d / f"{i}.png")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gene", required=True)
    p.add_argument("--data-root", default=None, help="folder with the Omniglot zips (default: the omniglot source's)")
    p.add_argument("--alphabets", nargs="+", default=["Greek", "Latin", "Tagalog"])
    p.add_argument("--tasks", type=int, default=20)
    p.add_argument("--ways", type=int, default=20)
    p.add_argument("--shots", type=int, default=1)
    p.add_argument("--queries", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--preset", default=None, help="take the [individual] settings of a preset (default: library)")
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    root = Path(a.data_root) if a.data_root else default_data_root() / "omniglot"
    gene = load_gene(a.gene)
    cfg = load_config(a.preset, None, []) if a.preset else None
    chars = characters(root, a.alphabets)
    pool = sorted(c for c, d in chars.items() if len(d) >= a.shots + a.queries)
    rng = random.Random(a.seed)
    rows: list[dict[str, Any]] = []
    for t in range(a.tasks):
        picked = rng.sample(pool, a.ways)
        task = {c: rng.sample(chars[c], a.shots + a.queries) for c in picked}
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            write_task(tmp, task, a.shots, rng)
            row: dict[str, Any] = {"task": t, "classes": picked}
            for label, folder, invert in (("contract", "raw", None), ("by_hand", "by_hand", False),
                                          ("ignored", "raw", False)):
                r = inherit(gene, tmp / folder / "support", None, query_dir=tmp / folder / "query", cfg=cfg,
                            seed=t, invert=invert)
                row[label] = r["query_accuracy"]
                row[f"{label}_warnings"] = len(r.get("warnings") or [])
                # the same model untrained: its imprinted cosine head is nearest-class-mean on the gene's features
                ncm = inherit(gene, tmp / folder / "support", None, query_dir=tmp / folder / "query", cfg=cfg,
                              seed=t, invert=invert, overrides=["individual.epochs=0", "individual.head_epochs=0"])
                row[f"{label}_ncm"] = ncm["query_accuracy"]
            rows.append(row)
        print(f"task {t + 1}/{a.tasks}: contract {row['contract']:.3f} (ncm {row['contract_ncm']:.3f}), by hand "
              f"{row['by_hand']:.3f} (ncm {row['by_hand_ncm']:.3f}), ignored {row['ignored']:.3f}", flush=True)
    summary: dict[str, Any] = {"gene": str(a.gene), "alphabets": a.alphabets, "tasks": a.tasks, "ways": a.ways,
                               "shots": a.shots, "queries": a.queries, "seed": a.seed, "preset": a.preset,
                               "rows": rows}
    for label in ("contract", "by_hand", "ignored"):
        for key in (label, f"{label}_ncm"):
            m, ci = mean_ci95([r[key] for r in rows])
            summary[key] = {"mean": m, "ci95": ci}
    for a_, b_ in (("contract", "by_hand"), ("contract", "ignored")):
        m, ci = mean_ci95([r[a_] - r[b_] for r in rows])
        summary[f"{a_}_minus_{b_}"] = {"mean": m, "ci95": ci}
    out = Path(a.out)
    atomic_write_json(out / "inherit_files.json", jsonable(summary))
    lines = [f"# inherit on raw files ({a.ways}-way {a.shots}-shot, {a.tasks} tasks of {', '.join(a.alphabets)})",
             "", "| reading | inherit: query accuracy (95% CI over tasks) | untrained (NCM on the gene) | "
             "support warned |", "|---|---|---|---|"]
    for label, text in (("contract", "raw PNGs, the gene's contract (default)"),
                        ("by_hand", "inverted by hand, invert=false"), ("ignored", "raw PNGs, invert=false")):
        s, n = summary[label], summary[f"{label}_ncm"]
        warned = sum(1 for r in rows if r[f"{label}_warnings"])
        lines.append(f"| {text} | {s['mean']:.3f} ±{s['ci95']:.3f} | {n['mean']:.3f} ±{n['ci95']:.3f} | "
                     f"{warned} of {a.tasks} tasks |")
    for key in ("contract_minus_by_hand", "contract_minus_ignored"):
        s = summary[key]
        lines.append(f"\n{key.replace('_', ' ')} (paired): {100 * s['mean']:+.1f} ±{100 * s['ci95']:.1f} points")
    atomic_write_bytes(out / "inherit_files.md", ("\n".join(lines) + "\n").encode())
    print(json.dumps({k: v for k, v in summary.items() if k != "rows"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
