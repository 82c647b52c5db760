"""The tables of BENCHMARKS.md, rendered from the raw results in bench/results (every number has its raw file).

    python -m bench.tables            # rewrite every marked table of BENCHMARKS.md from bench/results
    python -m bench.tables --check    # exit 1 naming each marked table that differs (tests/test_benchmarks_tables.py)

A table in BENCHMARKS.md sits between ``<!-- table: NAME -->`` and ``<!-- /table -->``; ``TABLES[NAME]`` renders it
(table and the lines that state its intervals and verdicts) from the files it names. Intervals follow
``learngene.stats``: over the outermost random stage where the raw files have it (collective seeds), labelled as
conditional where they do not (one collective model, or one ancestry and learngene), never from fewer than 3
values, and an accuracy's interval never leaves [0, 1].
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from learngene.stats import format_ci, nested_ci95
from learngene.tune import tie_note

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
BENCHMARKS = ROOT / "BENCHMARKS.md"
BLOCK = re.compile(r"<!-- table: (?P<name>[\w:.-]+) -->\n(?P<body>.*?)<!-- /table -->", re.S)


@cache
def _json(rel: str) -> Any:
    return json.loads((RESULTS / rel).read_text())


def _acc(mean: float, ci: float, n: int | None = None) -> str:
    return f"{mean:.3f} {format_ci(mean, ci, n)}"


def _pts(d: dict[str, Any], tasks: bool = True) -> str:
    """'+2.0 ±5.2' (interval over collective seeds), '(tasks ±1.5)' beside it; bold when the outer one excludes 0."""
    cell = f"{100 * d['mean']:+.1f} " + (f"±{100 * d['ci95']:.1f}" if math.isfinite(d["ci95"]) else "(no CI)")
    cell = f"**{cell}**" if d["excludes_0"] else cell
    return cell + (f" (tasks ±{100 * d['tasks_ci95']:.1f})" if tasks else "")


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *("| " + " | ".join(r) + " |" for r in rows)]


SETTING_NAMES = {"5way1shot": "5-way 1-shot", "20way1shot": "20-way 1-shot", "5way5shot": "5-way 5-shot",
                 "20way5shot": "20-way 5-shot"}
SETTINGS = list(SETTING_NAMES)


# ---------------------------------------------------------------------- transformer learngenes (vit-glyphs)
def _vit_rows(rel: str) -> dict[tuple[str, int], dict[str, Any]]:
    return {(r["method"], r["depth"]): r for r in _json(rel)["descendants"]["rows"]}


def _at_epoch(row: dict[str, Any], epoch: int) -> float | None:
    curve = row["curve"]
    return curve["acc"][curve["epochs"].index(epoch)] if epoch in curve["epochs"] else None


def vit_depth() -> str:
    rel = "vit-glyphs/report.json"
    report, rows = _json(rel), _vit_rows(rel)
    depths = sorted({d for _, d in rows})
    main = ["scratch", "heur-lg", "truncated", "tleg"]
    ep = {m: next(r["epochs"] for (mm, _), r in rows.items() if mm == m) for m in main}
    head = ["depth", "params", *(f"{m} ({ep[m]} ep)" for m in main), "tleg after 3 ep",
            f"scratch at epoch 10 of its {ep['scratch']}-epoch run"]
    body = []
    for d in depths:
        best = max(rows[(m, d)]["acc"] for m in main if (m, d) in rows)
        cells = [str(d), f"{rows[('scratch', d)]['params']:,}"]
        for m in main:
            r = rows.get((m, d))
            cell = "n/a" if r is None else _acc(r["acc"], r["acc_ci95"], len(r["per_seed"]))
            cells.append(f"**{cell}**" if r is not None and r["acc"] == best else cell)
        t3, s10 = _at_epoch(rows[("tleg", d)], 3), _at_epoch(rows[("scratch", d)], 10)
        cells += [f"{t3:.3f}" if t3 is not None else "-", f"{s10:.3f}" if s10 is not None else "-"]
        body.append(cells)
    stored = {m: next(r["stored_params"] for (mm, _), r in rows.items() if mm == m) for m in main}
    body.append(["stored", "", *(f"{stored[m]:,}" for m in main), "", ""])
    seeds = report["descendants"]["protocol"]["seeds"]
    return "\n".join([
        *_table(head, body), "",
        f"Mean ± 95% CI over descendant seeds {seeds} (Student t, {len(seeds) - 1} df) of **one** ancestry, aux net "
        "and pair of learngenes (seed 0): conditional on them, not an interval over learngenes. The last column is "
        "read at epoch 10 of a cosine schedule planned for the full run (learning rate still about 75% of its "
        "peak), not from a 10-epoch schedule.",
    ])


def _head_params(report: dict[str, Any]) -> int:
    """The ancestry's (and the aux net's) classifier over the source classes: width x classes + bias."""
    shape = report["ancestry"]["shape"]
    return shape["embed_dim"] * shape["num_classes"] + shape["num_classes"]


def vit_targets() -> str:
    rel = "vit-glyphs/report.json"
    report, rows = _json(rel), _vit_rows(rel)
    depths = sorted({d for _, d in rows})
    gains = [rows[("tleg", d)]["acc"] - rows[("scratch", d)]["acc"] for d in depths]
    lines = []
    for d in (10, 12):
        t, h = rows[("tleg", d)], rows[("heur-lg", d)]
        (tl, th), (hl, hh) = (_bounds(t), _bounds(h))
        lines.append((d, tl, th, hl, hh, tl > hh))
    anc, stored = report["ancestry"]["params"], report["tleg"]["stored_params"]
    head = _head_params(report)
    no_heads = stored / (anc - head)
    both_heads = (stored + head) / anc
    t8, tr8 = rows[("tleg", 8)]["acc"], rows[("truncated", 8)]["acc"]
    body = [
        ["at every depth, TLEG reaches scratch's 30-epoch accuracy in at most 10 epochs",
         f"TLEG after 10 epochs is ahead of scratch after 30 at all {len(depths)} depths, by "
         f"{100 * min(gains):.1f} to {100 * max(gains):.1f} points (means over descendant seeds)",
         "yes, for one learngene" if min(gains) > 0 else "**no**"],
        ["at depths 10 and 12, TLEG beats Heur-LG with non-overlapping 95% CIs (3 seeds)",
         "; ".join(f"d{d}: [{tl:.3f}, {th:.3f}] vs [{hl:.3f}, {hh:.3f}]" for d, tl, th, hl, hh, _ in lines),
         "yes, over descendant seeds of one learngene" if all(x[-1] for x in lines) else "**no**"],
        ["the TLEG learngene stores at most 1/4 of the ancestry (counted alike: no heads on either side)",
         f"{stored:,} / ({anc:,} - {head:,} head) = {100 * no_heads:.1f}%; with both heads "
         f"({stored:,} + {head:,}) / {anc:,} = {100 * both_heads:.1f}%",
         "yes" if no_heads <= 0.25 else "**no**"],
        ["at the ancestry's depth (8), TLEG within 2 points of the truncated ancestry",
         f"{t8:.3f} vs {tr8:.3f}: {100 * (tr8 - t8):.1f} points behind",
         "yes" if tr8 - t8 <= 0.02 else "**no**"],
    ]
    return "\n".join(_table(["target", "result", "met"], body))


def _bounds(row: dict[str, Any]) -> tuple[float, float]:
    return max(0.0, row["acc"] - row["acc_ci95"]), min(1.0, row["acc"] + row["acc_ci95"])


VARIANTS = [("vit-glyphs", "the table above: ancestry 30 epochs, aux 30 epochs, α 0.5"),
            ("vit-glyphs-variants/alpha1", "`vit.distill_alpha=1.0` (TLEG's own pure soft distillation)"),
            ("vit-glyphs-variants/aux60", "`vit.aux_epochs=60`"),
            ("vit-glyphs-variants/anc60", "`vit.ancestry_epochs=60` (truncated only)"),
            ("vit-glyphs-variants/a60x60", "`vit.ancestry_epochs=60 vit.aux_epochs=60`")]


def vit_variants() -> str:
    body = []
    for folder, label in VARIANTS:
        report = _json(f"{folder}/report.json")
        rows = _vit_rows(f"{folder}/report.json")
        tleg, trunc = rows.get(("tleg", 8)), rows.get(("truncated", 8))
        body.append([label, f"{report['ancestry']['val_acc']:.3f}",
                     f"{report['tleg']['val_acc']:.3f}" if "tleg" in report else "—",
                     _acc(tleg["acc"], tleg["acc_ci95"], 3) if tleg else "—",
                     _acc(trunc["acc"], trunc["acc_ci95"], 3) if trunc else "—"])
    return "\n".join(_table(["variant", "ancestry source val", "aux source val", "tleg, depth 8", "truncated, depth 8"],
                            body))


def vit_linearity() -> str:
    s = _json("vit-glyphs/report.json")["linearity"]["summary"]
    body = [[f"{k} R²" if k != "mean" else "mean R² over tensors", f"{s[f'{k}_r2']:.3f}", f"{s[f'{k}_r2_shuffled']:.3f}"]
            for k in ("mean", "median", "pooled")]
    body[1][0], body[2][0] = "median R²", "pooled R² (all elements)"
    return "\n".join(_table(["", "layer order", "shuffled"], body))


# ---------------------------------------------------------------------- vit-glyphs over learngenes (issues 16, 17)
LEVERS = "vit-glyphs-levers/levers.json"
FEWSHOT_CHOOSE = "vit-glyphs-fewshot/choose/fewshot.json"
FEWSHOT_CHOOSE1 = "vit-glyphs-fewshot/choose/round1.json"
FEWSHOT_TARGET = "vit-glyphs-fewshot/target/fewshot.json"


def _ci_pts(d: dict[str, Any]) -> str:
    """A paired difference in points with its interval over learngenes (none from fewer than 3)."""
    ci = d["ci95"]
    cell = f"{100 * d['mean']:+.1f} " + (f"±{100 * ci:.1f}" if ci is not None and math.isfinite(ci) else
                                         f"(no CI, n = {d['n']})")
    return f"**{cell}**" if d["excludes_0"] else cell


def vit17_levers() -> str:
    body = []
    records = _json(LEVERS)["records"]
    for r in records:
        init = r.get("init") or {}
        body.append([f"`{r['variant']}`", ", ".join(f"`{o}`" for o in r["overrides"]) or "TLEG's own (random "
                     "templates, soft, α 0.5, T 1)", f"{init.get('val_acc', float('nan')):.3f}",
                     f"{r['val_acc']:.3f}", f"{100 * (r['val_acc'] - r['ancestry_val_acc']):+.1f}",
                     f"{init['r2_mean']:.3f}" if "r2_mean" in init else "-"])
    anc, epochs = records[0]["ancestry_val_acc"], records[0]["epochs"]
    return "\n".join([*_table(["variant", "settings", "aux source val before distilling",
                                f"after {epochs} epochs", "minus the ancestry (points)", "fit R² (mean)"], body), "",
                      f"Source-class validation accuracy (300-way, held-out images of the source classes) of the "
                      f"auxiliary net distilled from the learngene-seed-0 ancestry ({_json(LEVERS)['ancestry_epochs']} "
                      f"epochs, source val {anc:.3f}) for {epochs} epochs. Novel classes were not looked at."])


def vit16_depth(rel: str) -> Callable[[], str]:
    """TLEG against the truncated ancestry at equal ancestry training, paired over learngene seeds (issue 16)."""
    def render() -> str:
        report = _json(rel)
        rows = {(r["method"], r["depth"]): r for r in report["descendants"]["rows"] if not r["budget"]}
        paired = {(p["a"], p["b"], p["depth"]): p for p in report["descendants"]["paired"] if p["equal_budget"]}
        depths = sorted({d for _, d in rows})
        methods = [m for m in report["descendants"]["methods"] if any(k[0] == m for k in rows)]
        head = ["depth", *(f"{m} ({rows[(m, depths[0])]['epochs']} ep)" for m in methods),
                "tleg - truncated (points, paired)", "within 2 points"]
        body = []
        for d in depths:
            cells = [str(d)]
            for m in methods:
                r = rows[(m, d)]
                cells.append(_acc(r["acc"], r["acc_ci95"] if r["acc_ci95"] is not None else math.nan, r["ci_n"]))
            p = paired[("tleg", "truncated", d)]
            ci = p["ci95"] if p["ci95"] is not None else math.nan
            verdict = ("yes" if math.isfinite(ci) and p["mean"] - ci >= -0.02 else
                       "no" if math.isfinite(ci) and p["mean"] + ci < -0.02 else
                       f"not shown (mean {'inside' if p['mean'] >= -0.02 else 'outside'})")
            body.append([*cells, _ci_pts(p), verdict])
        seeds = report["descendants"]["protocol"]["learngene_seeds"]
        per = "; ".join(f"{lin['learngene_seed']}: {lin['ancestry']['val_acc']:.3f} / {lin['tleg']['val_acc']:.3f}"
                        for lin in report["lineages"])
        tleg = report["tleg"]
        return "\n".join([*_table(head, body), "",
                          f"Mean ± 95% CI over learngene seeds {seeds} (Student t, {len(seeds) - 1} df): each seed "
                          f"trains its own ancestry ({report['config']['vit']['ancestry_epochs']} epochs), auxiliary "
                          f"net ({tleg['epochs']} epochs of distillation from the ancestry fit) and genes; within a "
                          "seed both methods' descendants share head, data order and augmentation. 'Within 2 "
                          "points': yes if the paired interval's lower end is above -2, no if its upper end is below "
                          f"-2. Source val accuracy, ancestry / aux net, per seed: {per}."])

    return render


def vit17_fewshot(rel: str) -> Callable[[], str]:
    def render() -> str:
        from bench.vit_fewshot import render as render_fewshot

        return render_fewshot(_json(rel)).rstrip("\n")

    return render
# ---------------------------------------------------------------------- descendants of any width (issue 20)
WIDTHS = "vit-widths/report.json"
WIDTH_METHODS = ["scratch", "weight-selection", "tleg", "frequency"]
LEARNGENES = ["weight-selection", "tleg", "frequency"]  # every method that starts from the ancestry's knowledge


def _grid() -> tuple[dict[str, Any], dict[tuple[str, int, int], dict[str, Any]]]:
    report = _json(WIDTHS)
    # main runs only: a run of the merged code also has equal-budget rows (``budget``) at the same shapes
    return report, {(r["method"], r["depth"], r["width"]): r for r in report["descendants"]["rows"]
                    if not r.get("budget")}


def _shapes(rows: dict[tuple[str, int, int], Any]) -> list[tuple[int, int]]:
    return sorted({(w, d) for _, d, w in rows})


def _cell(r: dict[str, Any] | None, best: bool = False) -> str:
    if r is None:
        return "n/a"
    ci = r["acc_ci95"] if r["acc_ci95"] is not None else math.nan
    text = _acc(r["acc"], ci, r.get("ci_n", len(r["per_seed"])))  # ci_n: the learngene seeds, where a run has them
    return f"**{text}**" if best else text


def vit_widths() -> str:
    report, rows = _grid()
    anc = report["descendants"]["ancestry_width"]
    head = ["width", "depth", "params", "scratch (30 ep)", *(f"{m} (10 ep)" for m in LEARNGENES),
            "best at 10 ep - scratch at 30 (points)"]
    body = []
    for w, d in _shapes(rows):
        accs = {m: rows[(m, d, w)]["acc"] for m in WIDTH_METHODS if (m, d, w) in rows}
        top = max(accs.values())
        best = max((m for m in LEARNGENES if m in accs), key=accs.get)
        cells = [str(w) + (" (ancestry)" if w == anc else ""), str(d), f"{rows[('scratch', d, w)]['params']:,}"]
        cells += [_cell(rows.get((m, d, w)), accs.get(m) == top) for m in WIDTH_METHODS]
        cells.append(f"{100 * (accs[best] - accs['scratch']):+.1f} ({best})")
        body.append(cells)
    seeds = report["descendants"]["protocol"]["seeds"]
    same = sorted({(r["depth"], r["width"]) for r in report["descendants"]["rows"] if r.get("same_as")})
    return "\n".join([
        *_table(head, body), "",
        f"Mean ± 95% CI over descendant seeds {seeds} (Student t, {len(seeds) - 1} df) of **one** ancestry and one "
        f"of each learngene (seed {report['seed']}): conditional on them. Bold: the best mean of the row. At the "
        f"ancestry's width and depths up to its {report['ancestry']['depth']}, weight selection *is* the truncated "
        f"ancestry (the same model, trained once: {', '.join(f'd{d}' for d, _ in same)}).",
    ])


def vit_widths_epochs() -> str:
    report, rows = _grid()
    body = []
    for w, d in _shapes(rows):
        cells = [str(w), str(d)]
        for m in WIDTH_METHODS:
            r = rows.get((m, d, w))
            cells.append("n/a" if r is None else " / ".join(
                "-" if (a := _at_epoch(r, e)) is None else f"{a:.2f}" for e in (1, 3, 10)))
        body.append(cells)
    return "\n".join([*_table(["width", "depth", *(f"{m}: 1 / 3 / 10 ep" for m in WIDTH_METHODS)], body), "",
                      "Mean test accuracy after 1, 3 and 10 epochs (scratch: read on its 30-epoch cosine schedule, "
                      "so its learning rate is still high at epoch 10)."])


def vit_widths_compute() -> str:
    report, rows = _grid()
    anc = report["ancestry"]
    anc_s, anc_p = anc["train_seconds"], anc["params"]
    head_p = _head_params(report)
    tleg = report.get("tleg") or {}
    learn = {"scratch": 0.0, "weight-selection": anc_s, "tleg": anc_s + tleg.get("train_seconds", 0.0),
             "frequency": anc_s}
    stored = {m: next(r["stored_params"] for (mm, _, _), r in rows.items() if mm == m) for m in WIDTH_METHODS}
    stored["weight-selection"] = anc_p - head_p  # like for like: the ancestry without its head
    body = []
    for m in WIDTH_METHODS:
        desc = sum(r["train_seconds"] for (mm, _, _), r in rows.items() if mm == m and not r.get("same_as"))
        twins = [r for (mm, _, _), r in rows.items() if mm == m and r.get("same_as")]
        desc += sum(rows[(r["same_as"], r["depth"], r["width"])]["train_seconds"] for r in twins)
        frac = "" if m == "scratch" else f" ({100 * stored[m] / (anc_p - head_p):.1f}% of the ancestry)"
        body.append([m, f"{stored[m]:,}{frac}", f"{learn[m]:,.0f}", f"{desc:,.0f}", f"{learn[m] + desc:,.0f}"])
    seeds = len(report["descendants"]["protocol"]["seeds"])
    return "\n".join([
        *_table(["method", "stored parameters (no head)", "learngene training (s)",
                 f"all {len(_shapes(rows))} shapes x {seeds} seeds (s)", "total (s)"], body), "",
        f"CPU seconds of training on the shared 2-core machine (other jobs ran beside it: compare within the table). "
        f"Weight selection and the truncated ancestry store the whole ancestry ({anc_p - head_p:,} parameters "
        f"without its head; {anc_p:,} with it). The frequency learngene trains nothing beyond the ancestry "
        f"({anc_s:,.0f} s).",
    ])


def vit_widths_targets() -> str:
    report, rows = _grid()
    anc_w = report["descendants"]["ancestry_width"]
    shapes = _shapes(rows)
    wins = []
    for w, d in shapes:
        best = max(rows[(m, d, w)]["acc"] for m in LEARNGENES if (m, d, w) in rows)
        wins.append((w, d, best - rows[("scratch", d, w)]["acc"]))
    beaten = [x for x in wins if x[2] > 0]
    gaps = [(w, d, rows[("weight-selection", d, w)]["acc"] - rows[("frequency", d, w)]["acc"]) for w, d in shapes]
    within = [g for g in gaps if g[2] <= 0.02]
    freq = report["frequency"]
    other = [(w, d) for w, d in shapes if w != anc_w]
    tleg_vs = [(w, d, rows[("tleg", d, w)]["acc"] - rows[("weight-selection", d, w)]["acc"]) for w, d in other]
    tleg_won = [t for t in tleg_vs if t[2] > 0]
    timing = _json("vit-widths/inherit_time.json")

    def span(xs):
        return f"{100 * min(x[2] for x in xs):+.1f} to {100 * max(x[2] for x in xs):+.1f} points"

    body = [
        ["at every (depth, width), the best learngene method at 10 epochs beats scratch at 30",
         f"{len(beaten)} of {len(wins)} shapes ({span(wins)}; means)",
         "yes, for one ancestry" if len(beaten) == len(wins) else "**no**"],
        ["the frequency learngene within 2 points of weight selection at every shape, storing <= 1/4 of the ancestry",
         f"within 2 points at {len(within)} of {len(gaps)} shapes (weight selection - frequency: {span(gaps)}); "
         f"stores {100 * freq['stored_fraction_of_ancestry']:.1f}% (no head on either side)",
         "yes" if len(within) == len(gaps) and freq["stored_fraction_of_ancestry"] <= 0.25 else "**no**"],
        ["TLEG with its width rule beats weight selection at widths other than the ancestry's",
         f"ahead at {len(tleg_won)} of {len(tleg_vs)} shapes (tleg - weight selection: {span(tleg_vs)})",
         "yes" if len(tleg_won) == len(tleg_vs) else "**no**: see below"],
        ["`learngene inherit --gene <shipped glyph gene> --depth 6 --width 144 ... --compare scratch` under 30 s",
         f"{timing['seconds']:.1f} s wall ({timing['gene']}, {timing['support_images']} support / "
         f"{timing['query_images']} query images, {_inherit_training(timing)}, both models)",
         "yes" if timing["seconds"] < 30 else "**no**"],
    ]
    return "\n".join(_table(["target", "result", "met"], body))


def _inherit_training(timing: dict[str, Any]) -> str:
    """How the timed ``inherit`` trained: epochs of the full-data recipe (before issue 17's few-shot recipe), or
    the few-shot recipe's head and fine-tuning epochs."""
    if "epochs" in timing:
        return f"{timing['epochs']} epochs"
    t = timing["training"]
    return f"few-shot recipe: {t['head_epochs']} head + {t['epochs']} fine-tuning epochs"


def vit_frequency_keep() -> str:
    """The diagnostic after the result: the frequency gene with every coefficient kept, beside the grid's."""
    _, rows = _grid()
    full = _json("vit-widths/frequency-keep1/report.json")
    body = []
    for r in full["descendants"]["rows"]:
        d, w = r["depth"], r["width"]
        body.append([str(w), str(d), _cell(rows.get(("frequency", d, w))), _cell(r),
                     _cell(rows.get(("weight-selection", d, w)))])
    share = full["frequency"]["stored_fraction_of_ancestry"]
    return "\n".join(_table(["width", "depth", "frequency, keep 0.6 (23.9% stored)",
                              f"frequency, keep 1.0 ({100 * share:.0f}% stored)", "weight selection"], body))


def shipped_genes() -> str:
    """The learngenes shipped with the package, from their cards (src/learngene/shipped/<name>/card.json)."""
    shipped = ROOT / "src" / "learngene" / "shipped"
    body = []
    for card_file in sorted(shipped.glob("*/card.json")):
        c = json.loads(card_file.read_text())
        rows = {(r["method"], r["depth"], r["width"]): r for r in c["accuracy_on_held_out_classes"]["rows"]}
        own = [f"d{d} w{w}: {r['acc']:.3f}" for (m, d, w), r in rows.items() if m == c["kind"]]
        size = sum(c["files_bytes"].values())
        body.append([f"`{c['name']}`", c["kind"], f"{c['stored_params']:,} ({100 * c['stored_fraction_of_ancestry']:.1f}%)",
                     f"{size / 1e6:.2f} MB", "; ".join(own), f"{c['check']['acc']:.3f}"])
    return "\n".join(_table(["shipped gene", "kind", "stored parameters (of the ancestry, no heads)",
                              "adds to the wheel", "accuracy on its 150 held-out classes (10 epochs, mean of 3 seeds)",
                              "card check (20 classes, d2 w48, 3 epochs)"], body))


# ---------------------------------------------------------------------- Omniglot, three collective seeds
SEEDS = "omniglot-seeds/seeds.json"
SEED_METHODS = ["learngene", "scratch", "finetune", "linear-probe", "protonet", "ncm-collective", "ncm-gene", "joint",
                "gene-top"]


def _per_seed() -> list[dict[str, Any]]:
    return _json(SEEDS)["per_seed"]


def _nested(setting: str, method: str) -> dict[str, Any]:
    return nested_ci95([r["individual"]["settings"][setting]["methods"][method]["accuracies"] for r in _per_seed()])


def _paired_in(rel: str, setting: str, a: str, b: str) -> dict[str, Any]:
    """Paired a - b per target task of a bench.seeds file, with the interval over its collective seeds."""
    def accs(r, m):
        return r["individual"]["settings"][setting]["methods"][m]["accuracies"]

    return nested_ci95([[x - y for x, y in zip(accs(r, a), accs(r, b))] for r in _json(rel)["per_seed"]])


def _paired(setting: str, a: str, b: str) -> dict[str, Any]:
    return _paired_in(SEEDS, setting, a, b)


def seeds_accuracy() -> str:
    n_seeds = len(_per_seed())
    tasks = _nested(SETTINGS[0], "learngene")["tasks_n"]
    body = []
    for s in SETTINGS:
        cells = []
        for m in SEED_METHODS:
            d = _nested(s, m)
            cells.append(_acc(d["mean"], d["ci95"], d["n"]))
        body.append([SETTING_NAMES[s], *cells])
    return "\n".join([*_table([f"setting ({tasks} tasks)", *SEED_METHODS], body), "",
                      f"Mean ± 95% CI over the {n_seeds} collective seeds (per-seed means, Student t with "
                      f"{n_seeds - 1} df): the interval holds the variation between collective models. The interval "
                      "over the tasks, conditional on these models, is in `bench/results/omniglot-seeds/seeds.md`."])


PAIRS = [("learngene", "scratch"), ("learngene", "finetune"), ("learngene", "linear-probe"), ("learngene", "protonet"),
         ("ncm-collective", "joint")]


def seeds_paired() -> str:
    tasks = _paired(SETTINGS[0], *PAIRS[0])["tasks_n"]
    body = [[SETTING_NAMES[s], *(_pts(_paired(s, a, b)) for a, b in PAIRS)] for s in SETTINGS]
    return "\n".join([*_table([f"paired difference (points, {tasks} tasks)", *(f"{a} - {b}" for a, b in PAIRS)], body),
                      "", "Per target task differences, averaged per collective seed; ± is the 95% CI over the seeds' "
                      "mean differences (bold where it excludes 0), \"tasks\" the interval over all tasks as if "
                      "independent (conditional on the collective models)."])


HEADLINE = [("learngene", "scratch", s) for s in SETTINGS] + [
    ("learngene", "protonet", "5way5shot"), ("learngene", "protonet", "20way5shot"),
    ("learngene", "finetune", "20way1shot"), ("ncm-collective", "joint", "20way1shot")]


def seeds_headline() -> str:
    """The headline differences with the interval this page gave before issue 17 (over tasks) and now (over seeds)."""
    body = []
    for a, b, s in HEADLINE:
        d = _paired(s, a, b)
        body.append([f"{a} - {b}, {SETTING_NAMES[s]}", f"{100 * d['mean']:+.1f} ±{100 * d['tasks_ci95']:.1f}",
                     f"{100 * d['mean']:+.1f} ±{100 * d['ci95']:.1f} ({_verdict_vs(d)}; lower end "
                     f"{100 * (d['mean'] - d['ci95']):.2f})"])
    n = len(_per_seed())
    return "\n".join(_table([f"headline (points, Omniglot, {n} collective seeds)",
                             f"before: 95% CI over the {_paired(SETTINGS[0], 'learngene', 'scratch')['tasks_n']} tasks",
                             f"now: 95% CI over the {n} seeds"], body))


def _verdict_vs(d: dict[str, Any]) -> str:
    if not math.isfinite(d["ci95"]):
        return "no interval"
    if d["mean"] - d["ci95"] > 0:
        return "ahead"
    if d["mean"] + d["ci95"] < 0:
        return "behind"
    return "tie"


def seeds_targets() -> str:
    gap = _paired("20way1shot", "ncm-collective", "joint")
    gain = _paired("20way1shot", "learngene", "scratch")
    proto = {s: _paired(s, "learngene", "protonet") for s in SETTINGS}
    best = {s: [_paired(s, "learngene", m) for m in ("finetune", "linear-probe")] for s in ("5way1shot", "20way1shot")}
    shares = []
    for r in _per_seed():
        eff = r["collective"]["final"]["effective_params"]
        for s in ("5way1shot", "20way1shot"):
            shares.append(r["individual"]["settings"][s]["methods"]["learngene"]["params"] / eff)
    gap_low, gain_low = 100 * (gap["mean"] - gap["ci95"]), 100 * (gain["mean"] - gain["ci95"])
    proto_cells = "; ".join(f"{SETTING_NAMES[s]} {_pts(d, tasks=False)} {_verdict_vs(d)}" for s, d in proto.items())
    by = {v: [SETTING_NAMES[s] for s, d in proto.items() if _verdict_vs(d) == v] for v in ("ahead", "tie", "behind")}
    proto_met = ("**no**: behind at " + ", ".join(by["behind"]) if by["behind"] else
                 "yes" if not by["tie"] else
                 "a tie at " + ", ".join(by["tie"]) + (f"; ahead at {', '.join(by['ahead'])}" if by["ahead"] else ""))
    body = [
        ["collective features within 5 points of `joint` (novel alphabets, 20-way 1-shot, NCM)",
         f"{_pts(gap, tasks=False)} points; lower end {gap_low:.2f}", "**yes**" if gap_low > -5 else "**no**"],
        ["individual model beats scratch by at least 15 points at 20-way 1-shot",
         f"{_pts(gain, tasks=False)}; lower end {gain_low:.2f}", "**yes**" if gain_low >= 15 else "**no**"],
        ["individual model at least as accurate as the prototypical network", proto_cells,
         proto_met],
        ["individual model beats the better of linear-probe and finetune at 5-way and 20-way 1-shot",
         "; ".join(f"{SETTING_NAMES[s]}: vs finetune {_pts(f, tasks=False)}, vs linear-probe {_pts(lp, tasks=False)}"
                   for s, (f, lp) in best.items()),
         "**no**" if any(_verdict_vs(d) != "ahead" for ds in best.values() for d in ds) else "yes"],
        ["individual model uses at most half of the collective's effective parameters",
         f"{100 * min(shares):.0f}-{100 * max(shares):.0f}%", "**no**" if max(shares) > 0.5 else "yes"],
    ]
    return "\n".join([*_table(["target", f"measured (95% CI over {len(_per_seed())} collective seeds)", "met?"], body),
                      "", "ProtoNet here is the one these runs trained: 740 episodes (a quarter of joint's 2,800 "
                      "optimizer steps), 1-shot only, lr and scale not tuned. The preset now trains it fairly "
                      "(BENCHMARKS, \"Fair baselines\"); the verdicts against it wait for that rerun."])


# ---------------------------------------------------------------------- issue 16: inheritance that builds on the gene
SEEDS16 = "omniglot-seeds-16/seeds.json"
SEED16_METHODS = ["learngene", "ncm-gene", "scratch", "finetune", "linear-probe", "ncm-collective"]


def seeds16_accuracy() -> str:
    """The omniglot preset after issue 16, over its collective seeds: accuracy per method, before beside it."""
    per = _json(SEEDS16)["per_seed"]
    settings = list(per[0]["individual"]["settings"])
    body = []
    for st in settings:
        cells = []
        for m in SEED16_METHODS:
            d = nested_ci95([r["individual"]["settings"][st]["methods"][m]["accuracies"] for r in per])
            old = _nested(st, m)
            cells.append(f"{_acc(d['mean'], d['ci95'], d['n'])} (was {old['mean']:.3f})")
        body.append([SETTING_NAMES[st], *cells])
    tasks = nested_ci95([r["individual"]["settings"][settings[0]]["methods"]["learngene"]["accuracies"]
                         for r in per])["tasks_n"]
    seeds = [r["seed"] for r in per]
    return "\n".join([*_table([f"setting ({tasks} tasks)", *SEED16_METHODS], body), "",
                      f"Mean ± 95% CI over collective seeds {seeds} (per-seed means, Student t with {len(seeds) - 1} "
                      "df); \"was\": the same method and setting in the three-seed table before issue 16 "
                      f"(`{SEEDS}`: the same collective configuration and seeds, trained by that day's code, the old "
                      "individual recipe and one shared lr; not paired with these tasks)."])


def seeds16_targets() -> str:
    rows = []
    for st in _json(SEEDS16)["per_seed"][0]["individual"]["settings"]:
        for b, want in (("ncm-gene", 0.03), ("finetune", -0.06), ("scratch", None)):
            d, old = _paired_in(SEEDS16, st, "learngene", b), _paired(st, "learngene", b)
            low = d["mean"] - d["ci95"]
            if want is None:
                verdict = "-"
            elif (b == "finetune" and st != "20way1shot") or st not in ("5way1shot", "20way1shot"):
                verdict = "-"
            else:
                verdict = ("**yes**" if math.isfinite(low) and low >= want else
                           "**no**" if math.isfinite(d["ci95"]) and d["mean"] + d["ci95"] < want else
                           f"not shown (mean {'above' if d['mean'] >= want else 'below'} the bar)")
            bar = "-" if want is None or verdict == "-" else f"{100 * want:+.0f}"
            rows.append([f"learngene - {b}, {SETTING_NAMES[st]}", f"{100 * old['mean']:+.1f} ±{100 * old['ci95']:.1f}",
                         _pts(d, tasks=False), bar, verdict])
    return "\n".join([*_table(["paired difference (points)", "before (3 seeds, old recipe)",
                                "now (95% CI over seeds)", "target", "met?"], rows), "",
                      "Met: the lower end of the interval over collective seeds is at or above the target; not: its "
                      "upper end is below it; else the interval holds the bar and the data cannot say."])


SEEDS17P = "omniglot-seeds-17-protonet/seeds.json"


def seeds17_protonet() -> str:
    """learngene against the fairly trained and tuned ProtoNet (issue 17), over the three collective seeds."""
    per = _json(SEEDS17P)["per_seed"]
    body = []
    for st in per[0]["individual"]["settings"]:
        accs = {m: nested_ci95([r["individual"]["settings"][st]["methods"][m]["accuracies"] for r in per])
                for m in ("learngene", "protonet")}
        d, old = _paired_in(SEEDS17P, st, "learngene", "protonet"), _paired(st, "learngene", "protonet")
        body.append([SETTING_NAMES[st], _acc(accs["learngene"]["mean"], accs["learngene"]["ci95"], 3),
                     _acc(accs["protonet"]["mean"], accs["protonet"]["ci95"], 3),
                     f"{100 * old['mean']:+.1f} ±{100 * old['ci95']:.1f} ({_verdict_vs(old)})",
                     f"{_pts(d, tasks=False)} ({_verdict_vs(d)})"])
    cfg = per[0]["config"]["baseline"]
    tasks = _paired_in(SEEDS17P, "5way1shot", "learngene", "protonet")["tasks_n"]
    return "\n".join([*_table([f"setting ({tasks} tasks)", "learngene", "protonet (fair)",
                                "learngene - protonet before (old ProtoNet)", "learngene - protonet now"], body), "",
                      f"Mean ± 95% CI over collective seeds {[r['seed'] for r in per]} (Student t, 2 df). ProtoNet: "
                      f"joint's optimizer steps, trained at the shot it is evaluated at, {cfg['protonet_ways']}-way "
                      f"episodes, lr {cfg['protonet_lr']:g} and logit scale {cfg['protonet_scale']:g} (t11). The "
                      "collective models and genes are those of the issue-16 three-seed table; before: the old ProtoNet, "
                      f"`{SEEDS}`."])


DEFAULT16 = "default-16"


def default16() -> str:
    """The README's main job (`learngene run --preset default`) after issue 16: its headline setting."""
    rep = _json(f"{DEFAULT16}/report.json")
    ind = rep["individual"]
    st = ind["headline"]
    methods = ind["settings"][st]["methods"]
    ref = methods["ncm-gene"]["accuracies"]
    body = []
    for m, r in methods.items():
        vs = r.get("vs_scratch")
        diff = [a - b for a, b in zip(r["accuracies"], ref)]
        d = nested_ci95([diff])
        gene = "-" if m == "ncm-gene" else f"{100 * d['mean']:+.1f} ±{100 * d['tasks_ci95']:.1f}"
        body.append([m, _acc(r["acc_mean"], r["acc_ci95"], r["n"]),
                     "-" if not vs else f"{100 * vs['mean']:+.1f} ±{100 * vs['ci95']:.1f}", gene,
                     f"{r['params']:,} ({r['inherited_params']:,})", f"{r['train_seconds_mean']:.2f}"])
    log = (RESULTS / DEFAULT16 / "time.txt").read_text()
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", log).group(1)
    user = float(re.search(r"User time \(seconds\): (\S+)", log).group(1))
    lrs = ind["learning_rates"]
    own = ", ".join(f"{k} {v:g}" for k, v in lrs["own"].items()) or "none"
    return "\n".join([*_table([f"method ({SETTING_NAMES[st]}, {methods['learngene']['n']} tasks)", "accuracy",
                                "vs scratch (points, paired)", "vs ncm-gene (points, paired)",
                                "params (inherited)", "train s/task"], body), "",
                      f"`learngene run --preset default` (seed {rep['seed']}, one collective model: intervals over its "
                      f"target tasks). Whole run {wall} wall, {user:.0f} s user CPU, on the 2 shared cores with other "
                      f"jobs running. Own few-shot lr: {own}; shared individual.lr {lrs['individual_lr']:g}. Raw: "
                      f"`bench/results/{DEFAULT16}/`."])


INHERIT_FILES = "inherit-files/inherit_files.json"


def inherit_files() -> str:
    """`learngene inherit` on raw Omniglot PNG folders: the gene's input contract against conversion by hand."""
    r = _json(INHERIT_FILES)
    rows, body = r["rows"], []
    for label, text in (("contract", "raw PNGs, read by the gene's contract (the default)"),
                        ("by_hand", "inverted by hand first, `--invert false`"),
                        ("ignored", "raw PNGs, `--invert false` (what inherit did before)")):
        s, n = r[label], r[f"{label}_ncm"]
        gain = nested_ci95([[x[label] - x[f"{label}_ncm"] for x in rows]])
        warned = sum(1 for x in rows if x[f"{label}_warnings"])
        body.append([text, _acc(s["mean"], s["ci95"]), _acc(n["mean"], n["ci95"]),
                     f"{100 * gain['mean']:+.1f} ±{100 * gain['tasks_ci95']:.1f}", f"{warned} of {len(rows)}"])
    d = r["contract_minus_by_hand"]
    return "\n".join([*_table(["reading", "inherit (trained)", "same model untrained (NCM on the gene)",
                                "trained - untrained (points, paired)", "tasks warned"], body), "",
                      f"{r['ways']}-way {r['shots']}-shot, {r['tasks']} tasks of {', '.join(r['alphabets'])} (alphabets "
                      f"the gene never saw), {r['queries']} queries per class, the `{r['preset']}` preset's "
                      f"[individual] settings, one gene (collective seed 0); ± over tasks. Contract - by hand, "
                      f"paired: {100 * d['mean']:+.1f} ±{100 * d['ci95']:.1f} points. Raw: `bench/results/"
                      f"{INHERIT_FILES}` (`python bench/inherit_files.py`)."])


# ---------------------------------------------------------------------- tuning
def tuning(name: str) -> Callable[[], str]:
    def render() -> str:
        t = _json(f"tuning/{name}.json")
        rows = t["rows"]
        rank = t.get("ranked_by") or ("individual" if "individual" in rows[0] else "ncm")
        setting = SETTING_NAMES.get(t["setting"], t["setting"])
        if rank == "individual":
            method = rows[0].get("method") or "learngene"  # tune --method: the method whose score ranks
            head = ["settings", f"{method} (pseudo, {setting})", "scratch"]
            body = [[" ".join(r["overrides"]), _acc(r["individual"], r["individual_ci95"], r["n"]),
                     "-" if r.get("scratch") is None else f"{r['scratch']:.3f}"] for r in rows]
        else:
            head = ["settings", f"NCM (pseudo, {setting})", "joint NCM", "paired gap to joint (points)",
                    "class-IL acc of the stream", "memory images"]
            body = [[" ".join(r["overrides"]), _acc(r["ncm"], r["ncm_ci95"], r["n"]), f"{r['joint_ncm']:.3f}",
                     f"{100 * r['gap_to_joint']:+.1f} ±{100 * r['gap_to_joint_ci95']:.1f}",
                     f"{r['average_accuracy_class_incremental']:.3f}", f"{r['memory_images']:,.0f}"] for r in rows]
        tie = tie_note(rows, rank)
        return "\n".join([
            *_table(head, body), "",
            f"`bench/results/tuning/{name}.json`: collective seed {t['seeds']}, {t['episodes_per_seed']} pseudo-tasks; "
            "± is the 95% interval over the pseudo-tasks of that one collective model (conditional on it). Chosen: `"
            + " ".join(t["chosen"]) + "`" + (f"; {tie}." if tie else "; its interval does not hold the runner-up."),
        ])

    return render


# ---------------------------------------------------------------------- Omniglot before issue 9 (one collective)
BEFORE = {"5way1shot": "accuracy-omniglot-1shot", "20way1shot": "accuracy-omniglot-1shot",
          "5way5shot": "accuracy-omniglot-5shot", "20way5shot": "accuracy-omniglot-20way5shot"}
BEFORE_METHODS = ["learngene", "scratch", "finetune", "linear-probe", "gene-top"]


def _before(setting: str) -> dict[str, Any]:
    return _json(f"{BEFORE[setting]}/accuracy.json")["individual"]["settings"][setting]["methods"]


def before_summary() -> str:
    body = []
    for s in SETTINGS:
        ms = _before(s)
        gain = ms["learngene"]["acc_mean"] - ms["scratch"]["acc_mean"]
        cells = [_acc(ms[m]["acc_mean"], ms[m]["acc_ci95"], ms[m]["n"]) for m in BEFORE_METHODS]
        cells.insert(2, f"{100 * gain:+.1f}")
        body.append([SETTING_NAMES[s], *cells])
    n = _before("5way1shot")["learngene"]["n"]
    return "\n".join([*_table([f"setting ({n} tasks each)", "learngene", "scratch", "gain", *BEFORE_METHODS[2:]], body),
                      "", f"± is the 95% interval over the {n} tasks of one collective model and gene (conditional "
                      "on them: one collective seed gives no interval over collective models)."])


def before_full(setting: str) -> Callable[[], str]:
    def render() -> str:
        body = []
        for m, r in _before(setting).items():
            name = f"{m} (= {r['same_as']})" if r.get("same_as") else m
            body.append([name, f"{r['acc_mean']:.3f}", format_ci(r["acc_mean"], r["acc_ci95"], r["n"]), str(r["n"]),
                         f"{r['params']:,}", f"{r['inherited_params']:,}", str(r["epochs_to_90pct_final"]),
                         f"{r['train_seconds_mean']:.2f}"])
        return "\n".join(_table(["method", "accuracy", "95% CI (tasks of one collective model)", "n", "params",
                                 "inherited", "epochs to 90%", "train s/task"], body))

    return render


def before_shots() -> str:
    sweep = _json("accuracy-omniglot-sweeps/accuracy.json")["shots_sweep"]
    body = [[k, *(_acc(v[m]["acc_mean"], v[m]["acc_ci95"]) for m in ("learngene", "scratch"))] for k, v in sweep.items()]
    return "\n".join(_table(["shots", "learngene", "scratch"], body))


def before_sizes() -> str:
    sweep = _json("accuracy-omniglot-sweeps/accuracy.json")["size_sweep"]
    body = [[k, str(v["after"]) if v["after"] else "none", f"{v['learngene']['params']:,}",
             *(_acc(v[m]["acc_mean"], v[m]["acc_ci95"]) for m in ("learngene", "scratch"))] for k, v in sweep.items()]
    return "\n".join(_table(["size (5-way 1-shot)", "fresh layers after the gene", "params", "learngene", "scratch"],
                            body))


def genetop_convergence() -> str:
    ms = _json("omniglot-genetop-convergence/accuracy.json")["individual"]["settings"]["5way1shot"]["methods"]
    epochs = [10, 30, 60, 90, 120, 150]
    labels = {"learngene": "learngene (`features.0-2`)", "gene-top": "gene-top (`features.1-3`)", "scratch": "scratch"}
    body = [[labels[m], *(f"{ms[m]['curve'][ms[m]['curve_epochs'].index(e)]:.3f}" for e in epochs)] for m in labels]
    return "\n".join(_table(["epoch", *map(str, epochs)], body))


def speed_table() -> str:
    """The measurement table of bench/results/speed.md, which ``python -m bench.speed`` copies into the Speed
    section of BENCHMARKS.md (that section is replaced whole, so it carries no markers)."""
    return "\n".join(line for line in (RESULTS / "speed.md").read_text().splitlines() if line.startswith("|"))


TABLES: dict[str, Callable[[], str]] = {
    "vit17-levers": vit17_levers,
    "vit17-fewshot-choose1": vit17_fewshot(FEWSHOT_CHOOSE1),
    "vit17-fewshot-choose": vit17_fewshot(FEWSHOT_CHOOSE),
    "vit17-fewshot-target": vit17_fewshot(FEWSHOT_TARGET),
    "vit16-depth:aux10": vit16_depth("vit-glyphs-16/aux10/report.json"),
    "vit16-depth:aux30": vit16_depth("vit-glyphs-16/aux30/report.json"),
    "vit-depth": vit_depth,
    "vit-targets": vit_targets,
    "vit-variants": vit_variants,
    "vit-linearity": vit_linearity,
    "vit-widths": vit_widths,
    "vit-widths-epochs": vit_widths_epochs,
    "vit-widths-compute": vit_widths_compute,
    "vit-widths-targets": vit_widths_targets,
    "shipped-genes": shipped_genes,
    "vit-frequency-keep": vit_frequency_keep,
    "tuning:t0-taskscope": tuning("t0-taskscope"),
    "tuning:t1-memory": tuning("t1-memory"),
    "tuning:t2-distill-noise": tuning("t2-distill-noise"),
    "tuning:t4-individual-lr": tuning("t4-individual-lr"),
    **{f"tuning:{n}": tuning(n) for n in ("t5-readout", "t6-epochs-lr", "t9-lr-scratch", "t9-lr-finetune",
                                          "t7-default-memory", "t8-default-readout", "t10-default-lr-scratch",
                                          "t10-default-lr-finetune", "t10-default-lr-linear-probe",
                                          "t11-protonet")},
    "default16": default16,
    "inherit-files": inherit_files,
    "seeds16-accuracy": seeds16_accuracy,
    "seeds17-protonet": seeds17_protonet,
    "seeds16-targets": seeds16_targets,
    "seeds-headline": seeds_headline,
    "seeds-accuracy": seeds_accuracy,
    "seeds-paired": seeds_paired,
    "seeds-targets": seeds_targets,
    "genetop-convergence": genetop_convergence,
    "before-summary": before_summary,
    "before-shots": before_shots,
    "before-sizes": before_sizes,
    **{f"before-full:{s}": before_full(s) for s in SETTINGS},
}


def blocks(text: str) -> dict[str, str]:
    """NAME -> the text between the markers (as stored)."""
    return {m["name"]: m["body"] for m in BLOCK.finditer(text)}


def render_all(text: str) -> str:
    """``text`` with every marked table replaced by its rendering; an unknown name is an error."""

    def sub(m: re.Match) -> str:
        name = m["name"]
        if name not in TABLES:
            raise KeyError(f"BENCHMARKS.md marks a table {name!r} that bench/tables.py does not know")
        return f"<!-- table: {name} -->\n{TABLES[name]()}\n<!-- /table -->"

    return BLOCK.sub(sub, text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.tables", description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="do not write; exit 1 if a marked table differs")
    p.add_argument("--file", default=str(BENCHMARKS))
    args = p.parse_args(argv)
    path = Path(args.file)
    text = path.read_text()
    new = render_all(text)
    missing = sorted(set(TABLES) - set(blocks(text)))
    if args.check:
        old, fresh = blocks(text), blocks(new)
        bad = [n for n in old if old[n] != fresh[n]]
        for n in bad + missing:
            print(f"{n}: {'differs from bench/results' if n in bad else 'not marked in ' + path.name}",
                  file=sys.stderr)
        return 1 if bad or missing else 0
    path.write_text(new)
    if missing:
        print(f"not marked in {path.name}: {', '.join(missing)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
