"""Build the learngenes that ship with the package (``src/learngene/shipped/<name>/``), each with its card.

    python -m bench.ship_genes --run runs/vit-widths        # from a finished vit-glyphs run (BENCHMARKS.md)
    python -m bench.ship_genes --run runs/ship --make       # or make that run first (learngene run --preset vit-glyphs)
    python -m bench.ship_genes --run runs/vit-widths --time-inherit bench/results/vit-widths/inherit_time.json

From the run's ``genes/frequency`` and ``genes/tleg``: the gene's files (weights only: no image), ``card.json``
(data, split, how it was trained, stored parameters, accuracy on its own held-out classes from the run's
``report.json``, the source's licence) and ``CARD.md``.  The card also holds a **check**: a reduced setting (the
first 20 novel classes of the split, a depth-2 width-48 descendant, 3 epochs, seed 0) and the accuracy that the
shipped gene itself gives there, computed here; ``tests/test_shipped.py`` reproduces it (slow test).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "src" / "learngene" / "shipped"
PRESET = "vit-glyphs"
GENES = {"glyphs-frequency": "frequency", "glyphs-tleg": "tleg"}
CHECK = {"classes": 20, "depth": 2, "width": 48, "epochs": 3, "seed": 0}
SHAPES = [(2, 48), (8, 96), (8, 144)]  # the card's accuracy table: small, the ancestry's, wide
LICENCE = ("weights: MIT, like the package. They were trained on glyphs rendered from the fonts bundled with "
           "matplotlib (DejaVu: Bitstream Vera licence with public-domain DejaVu changes; STIX: SIL Open Font "
           "License 1.1; Computer Modern: the BaKoMa fonts licence; see matplotlib's LICENSE folder). The file holds "
           "weights only, no image.")


def check_accuracy(gene: Any, check: dict[str, Any] = CHECK) -> float:
    """The card's check: a descendant of ``gene`` at the check's shape trained on the check's novel classes
    (each class split into train and test images as the run splits them) and tested on their test images."""
    import torch

    from learngene.config import load_config
    from learngene.engine import fit
    from learngene.prepare import load_data, make_split
    from learngene.runtime import derive_seed
    from learngene.vit.descendants import build_descendant
    from learngene.vit.train import Recipe, Task

    cfg = load_config(PRESET)
    data = load_data(cfg)
    novel = list(make_split(cfg, data).novel)[: check["classes"]]
    dev = torch.device("cpu")
    task = Task(data, novel, gene.input_spec, cfg.stream.test_fraction, derive_seed(cfg.seed, "novel-split"), dev)
    recipe = Recipe.from_config(cfg, dev)
    d = build_descendant(gene, check["depth"], task.num_classes, width=check["width"], seed=check["seed"])
    res = fit(d.model, recipe.task_batches(task, check["seed"]), check["epochs"],
              **{**recipe.options(seed=check["seed"], lr=recipe.child_lr, evaluate=task.accuracy,
                                  eval_epochs=[check["epochs"]]), "progress": False})
    return float(res["curve"][-1])


def _optimizer(cfg: dict[str, Any]) -> str:
    t = cfg["train"]
    return (f"AdamW lr {t['lr']:g}, weight decay {t['weight_decay']:g}, batch {t['batch_size']}, "
            f"{cfg['vit']['schedule']} schedule, {cfg['data']['augment']} augmentation")


def _card(name: str, method: str, gene: Any, report: dict[str, Any], files: dict[str, int]) -> dict[str, Any]:
    rows = {(r["method"], r["depth"], r.get("width")): r for r in report["descendants"]["rows"]}
    prot, anc, split = report["descendants"]["protocol"], report["ancestry"], report["split"]
    section = report.get(method.replace("-", "_")) or {}
    head = anc["shape"]["embed_dim"] * anc["shape"]["num_classes"] + anc["shape"]["num_classes"]
    accuracy = []
    for depth, width in SHAPES:
        for m in (method, "scratch"):
            r = rows.get((m, depth, width))
            if r is not None:
                accuracy.append({"method": m, "depth": depth, "width": width, "epochs": r["epochs"], "acc": r["acc"],
                                 "acc_ci95": r["acc_ci95"], "seeds": [s["seed"] for s in r["per_seed"]]})
    training = {"ancestry": {"model": report["config"]["model"]["name"], "epochs": report["config"]["vit"]["ancestry_epochs"],
                             "source_val_acc": anc["val_acc"], "train_seconds": anc["train_seconds"],
                             "optimizer": _optimizer(report["config"])}}
    if method == "tleg":
        training["auxiliary_net"] = {"rule": section["rule"], "depth": section["aux_depth"],
                                     "epochs": report["config"]["vit"]["aux_epochs"], "distill": section["distill"],
                                     "source_val_acc": section["val_acc"], "train_seconds": section["train_seconds"]}
    else:
        training["frequency"] = {"keep": section["keep"], "kept": section["kept"], "train_seconds": 0.0,
                                 "note": "no training: the ancestry's DCT coefficients"}
    summary = ("training-free: a glyph ViT's low-frequency DCT coefficients, descendants of any depth and width"
               if method == "frequency" else "TLEG templates distilled from a glyph ViT, any depth (any width by "
                                             "weight selection)")
    return {
        "name": name, "kind": method, "summary": summary, "format": gene.manifest()["format"],
        "stored_params": gene.stored_params,
        "stored_fraction_of_ancestry": gene.stored_params / (anc["params"] - head),
        "stored_counted": "the gene's tensors / the ancestry's parameters without its head",
        "files_bytes": files,
        "input": {k: gene.input_spec[k] for k in ("image_size", "channels", "mean", "std")},
        "data": {"source": "glyphs (embedded: rendered from matplotlib's fonts)", "image_size": report["data"]["image_size"],
                 "classes": report["config"]["data"]["max_classes"], "per_class": report["config"]["data"]["per_class"],
                 "source_classes": len(split["source"]), "novel_classes": len(split["novel"]),
                 "split": f"by class, seed {report['seed']}, look-alike classes kept on one side (preset {PRESET})",
                 "source_classes_sha256": hashlib.sha256(json.dumps(split["source"]).encode()).hexdigest()},
        "training": training,
        "accuracy_on_held_out_classes": {
            "protocol": f"descendants with a fresh head fine-tuned on the {prot['classes']} novel classes the gene "
                        f"never saw ({prot['train']} train / {prot['test']} test images), {prot['descendant_epochs']} "
                        f"epochs ({prot['scratch_epochs']} for scratch), mean and 95% CI over descendant seeds of "
                        "this one gene",
            "rows": accuracy},
        "check": {**CHECK, "acc": None, "what": "first classes of the novel split, the run's train/test split of "
                                                "their images, the preset's optimizer (tests/test_shipped.py)"},
        "licence": LICENCE,
        "made_by": "python -m bench.ship_genes",
    }


def _markdown(card: dict[str, Any]) -> str:
    t = card["training"]
    lines = [f"# {card['name']}", "", card["summary"] + ".", "",
             f"- kind: `{card['kind']}` ({card['format']}); stored: {card['stored_params']:,} parameters "
             f"({card['stored_fraction_of_ancestry']:.1%} of its ancestry, no head on either side); files: "
             + ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in card["files_bytes"].items()),
             f"- input: {card['input']['image_size']} px, {card['input']['channels']} channel(s)",
             f"- data: {card['data']['source']}; {card['data']['classes']} classes of {card['data']['per_class']} "
             f"images, {card['data']['split']}: {card['data']['source_classes']} source classes trained it, "
             f"{card['data']['novel_classes']} novel classes measured it",
             f"- ancestry: {t['ancestry']['model']}, {t['ancestry']['epochs']} epochs, source validation accuracy "
             f"{t['ancestry']['source_val_acc']:.3f} ({t['ancestry']['optimizer']})"]
    if "auxiliary_net" in t:
        a = t["auxiliary_net"]
        dist = a["distill"]
        lines.append(f"- auxiliary net: {a['rule']['name']} rule, depth {a['depth']}, {a['epochs']} epochs of "
                     f"{dist['mode']} distillation from the ancestry (alpha {dist['alpha']:g}, temperature "
                     f"{dist['temperature']:g}), source validation accuracy {a['source_val_acc']:.3f}")
    else:
        f = t["frequency"]
        lines.append(f"- frequency: {f['keep']:g} of the DCT coefficients kept per axis ({f['kept']}); no training")
    acc = card["accuracy_on_held_out_classes"]
    lines += ["", "## Accuracy on its own held-out classes", "", acc["protocol"] + ".", "",
              "| method | depth | width | epochs | accuracy | 95% CI |", "|---|---|---|---|---|---|"]
    for r in acc["rows"]:
        ci = "-" if r["acc_ci95"] is None else f"±{r['acc_ci95']:.3f}"
        lines.append(f"| {r['method']} | {r['depth']} | {r['width']} | {r['epochs']} | {r['acc']:.3f} | {ci} |")
    c = card["check"]
    lines += ["", f"Check (reproduced by `tests/test_shipped.py`): the first {c['classes']} novel classes, a depth-"
              f"{c['depth']} width-{c['width']} descendant, {c['epochs']} epochs, seed {c['seed']}: accuracy "
              f"{c['acc']:.3f}.", "", f"Licence: {card['licence']}", "", f"Made by `{card['made_by']}`.", ""]
    return "\n".join(lines)


def ship(run: Path) -> dict[str, dict[str, Any]]:
    from learngene.kinds import load_gene

    report = json.loads((run / "report.json").read_text())
    cards = {}
    for name, method in GENES.items():
        src = run / "genes" / method
        dst = SHIPPED / name
        if dst.exists():
            shutil.rmtree(dst)
        dst.mkdir(parents=True)
        for f in ("learngene.json", "model.safetensors"):
            shutil.copy2(src / f, dst / f)
        gene = load_gene(dst)
        files = {f: (dst / f).stat().st_size for f in ("learngene.json", "model.safetensors")}
        card = _card(name, method, gene, report, files)
        card["check"]["acc"] = check_accuracy(gene)
        (dst / "card.json").write_text(json.dumps(card, indent=2) + "\n")
        (dst / "CARD.md").write_text(_markdown(card))
        cards[name] = card
        print(f"{name}: {card['stored_params']:,} stored parameters, {sum(files.values()) / 1e6:.2f} MB, "
              f"check accuracy {card['check']['acc']:.3f}")
    return cards


def time_inherit(name: str = "glyphs-frequency", classes: int = 5, shots: int = 5, queries: int = 5) -> dict[str, Any]:
    """The issue's timing target, as a user runs it: ``learngene inherit --gene NAME --depth 6 --width 144 --support
    S --query Q --compare scratch`` in a fresh process (import, load, read the folders, train both, save), wall
    seconds.  S / Q: ``shots`` / ``queries`` PNGs of ``classes`` novel glyph classes (written to a temp dir)."""
    import tempfile
    import time

    import numpy as np
    from PIL import Image

    from learngene.config import load_config
    from learngene.prepare import load_data, make_split

    cfg = load_config(PRESET)
    data = load_data(cfg)
    novel = list(make_split(cfg, data).novel)[-classes:]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for c in novel:
            idx = data.indices_of(c)
            for part, ids in (("support", idx[:shots]), ("query", idx[shots:shots + queries])):
                (root / part / c).mkdir(parents=True)
                for i, j in enumerate(ids):
                    Image.fromarray(data.images[j][0].numpy().astype(np.uint8)).save(root / part / c / f"{i}.png")
        cmd = [sys.executable, "-m", "learngene", "inherit", "--gene", name, "--depth", "6", "--width", "144",
               "--support", str(root / "support"), "--query", str(root / "query"), "--out", str(root / "model"),
               "--compare", "scratch"]
        start = time.perf_counter()
        done = subprocess.run(cmd, check=True, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        training = json.loads((root / "model" / "model.json").read_text()).get("training")
    return {"seconds": seconds, "gene": name, "command": " ".join(["learngene", *cmd[3:]]),
            "support_images": classes * shots, "query_images": classes * queries,
            "training": training, "printed": done.stdout.strip().splitlines()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ship_genes", description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="a finished vit-glyphs run with genes/frequency and genes/tleg")
    p.add_argument("--make", action="store_true", help="run `learngene run --preset vit-glyphs` into --run first")
    p.add_argument("--time-inherit", metavar="JSON", help="also time `learngene inherit --gene glyphs-frequency --depth 6 "
                                                          "--width 144 ... --compare scratch` into this file")
    args = p.parse_args(argv)
    run = Path(args.run)
    if args.make:
        subprocess.run([sys.executable, "-m", "learngene", "run", "--preset", PRESET, "--out", str(run), "--resume",
                        "--quiet"], check=True)
    ship(run)
    if args.time_inherit:
        timing = time_inherit()
        Path(args.time_inherit).write_text(json.dumps(timing, indent=2) + "\n")
        print(f"inherit --depth 6 --width 144 --compare scratch: {timing['seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
