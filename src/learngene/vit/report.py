"""The report of a transformer run: ``report.md`` (width x depth x method tables, paired differences, storage,
few-shot, R^2 check), the accuracy-against-depth plot (the ancestry's width) and the accuracy-against-parameters
plot (every shape).  Intervals follow :mod:`learngene.stats`: over learngene seeds where the run has several, none
from fewer than 3 values, and an accuracy's interval never leaves [0, 1]."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from learngene.plots import new_figure, save_figure
from learngene.stats import clip, format_ci, mean_ci95

__all__ = ["ACCURACY_PLOT", "PARAMS_PLOT", "cell", "plot_accuracy_vs_depth", "plot_accuracy_vs_params",
           "render_vit_report", "summary_curve"]

ACCURACY_PLOT = "vit_accuracy_vs_depth.png"
PARAMS_PLOT = "vit_accuracy_vs_params.png"


def summary_curve(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """The mean accuracy curve over seeds, with its 95% CI at every epoch."""
    epochs = per_seed[0]["curve_epochs"]
    accs, cis = [], []
    for i in range(len(epochs)):
        m, h = mean_ci95([r["curve"][i] for r in per_seed])
        accs.append(m)
        cis.append(h)
    return {"epochs": epochs, "acc": accs, "acc_ci95": cis}


def cell(x: Any, digits: int = 3) -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}f}"


def _nan(x: float | None) -> float:
    return float("nan") if x is None else float(x)  # report.json stores a missing interval as null


def _ci(mean: float, ci: float | None, n: int | None) -> str:
    """An accuracy's interval as the report prints it: clipped to [0, 1], none from fewer than 3 values."""
    return format_ci(mean, _nan(ci), n)


def _pts(d: Mapping[str, Any]) -> str:
    """A paired difference in points with its interval ('no CI (n = 2 < 3)' when there is none)."""
    ci = _nan(d["ci95"])
    cell_ = f"{100 * d['mean']:+.1f} " + (f"±{100 * ci:.1f}" if math.isfinite(ci) else format_ci(d["mean"], ci, d["n"]))
    return f"**{cell_}**" if d["excludes_0"] else cell_


def _level(report: dict[str, Any]) -> str:
    prot = report["descendants"]["protocol"]
    lg, seeds = prot.get("learngene_seeds") or [report["seed"]], prot["seeds"]
    if len(lg) > 1:
        return (f"mean ± 95% Student-t CI over {len(lg)} learngene seeds {lg} (each its own ancestry, auxiliary net "
                f"and genes; per-learngene means over descendant seeds {seeds})")
    return (f"mean ± 95% CI over descendant seeds {seeds} of **one** learngene (seed {lg[0]}): conditional on it, "
            "not an interval over learngenes")


def render_vit_report(report: dict[str, Any]) -> str:
    """report.md of a transformer run: the depth x method table, paired differences, storage, few-shot, R^2."""
    rows = report["descendants"]["rows"]
    main = [r for r in rows if not r.get("budget")]
    methods = [m for m in report["descendants"]["methods"] if any(r["method"] == m for r in main)]
    depths = sorted({r["depth"] for r in main})
    widths = sorted({r.get("width") for r in main if r.get("width") is not None})
    by = {(r["method"], r["depth"], r.get("width")): r for r in main}
    anc, tleg, heur = report["ancestry"], report.get("tleg") or {}, report.get("heur_lg") or {}
    prot = report["descendants"]["protocol"]
    anc_no_head = anc.get("params_no_head", anc["params"])
    lines = [
        "# Transformer learngenes", "",
        f"Data {report['data']['name']}: ancestry on {report['data']['source_classes']} source classes; descendants "
        f"on {prot['classes']} novel classes ({prot['train']} train / {prot['test']} test images), "
        f"{prot['descendant_epochs']} epochs ({prot['scratch_epochs']} for scratch"
        + (f"; every method also at {prot['budget_epochs']} epochs, runs scheduled for them"
           if prot.get("budget_epochs") else "") + f"), learngene seeds {prot.get('learngene_seeds')}, descendant "
        f"seeds {prot['seeds']}.",
        f"Ancestry: {anc['depth']} blocks, {anc['params']:,} parameters ({anc_no_head:,} without its head), source "
        f"val accuracy {cell(anc.get('val_acc'))}.",
    ]
    lineages = report.get("lineages") or []
    if len(lineages) > 1:
        lines.append("Per learngene seed, source val accuracy of the ancestry / the TLEG auxiliary net: " + "; ".join(
            f"seed {lin['learngene_seed']}: {cell(lin['ancestry'].get('val_acc'))} / "
            f"{cell((lin.get('tleg') or {}).get('val_acc'))}" for lin in lineages) + ".")
    user = anc.get("user")
    if user:
        adapted = f"; adapted: {'; '.join(user['adapted'])}" if user.get("adapted") else ""
        lines.append(f"The ancestry is the user's {user.get('timm') or 'ViT'} from `{user['weights']}` (sha256 "
                     f"{user['sha256'][:12]}...): a fresh source-class head probed for {user['probe_epochs']} epoch(s), "
                     f"then fine-tuned for {user['fine_tune_epochs']} epoch(s){adapted}.")
    if tleg:
        with_heads = tleg.get("stored_fraction_with_heads")
        lines.append(f"TLEG: {tleg['rule']['name']} rule, auxiliary depth {tleg['aux_depth']}, val accuracy "
                     f"{cell(tleg.get('val_acc'))}; learngene stores {tleg['stored_params']:,} parameters: "
                     f"{tleg['stored_fraction_of_ancestry']:.1%} of the ancestry, no head on either side"
                     + (f" ({with_heads:.1%} with both source-class heads)" if with_heads is not None else "") + ".")
    if heur:
        lines.append(f"Heur-LG: ancestry blocks {heur['selected']} by {heur['name']}; learngene stores "
                     f"{heur['stored_params']:,} parameters ({heur['stored_fraction_of_ancestry']:.1%} of the "
                     "ancestry without its head).")
    fresh = report.get("frequency") or {}
    if fresh:
        lines.append(f"Frequency learngene: DCT coefficients kept {fresh['keep']:g} per axis {fresh['kept']}; stores "
                     f"{fresh['stored_params']:,} parameters ({fresh['stored_fraction_of_ancestry']:.1%} of the "
                     "ancestry, no head on either side); no training.")
    rules = report["descendants"].get("width_rules") or {}
    if len(widths) > 1 and rules:
        lines += ["", "Width rules: " + "; ".join(f"{m}: {rules[m]}" for m in methods if m in rules) + "."]
    for w in widths or [None]:
        lines += ["", "## Test accuracy on the novel classes" + (f", width {w}" if len(widths) > 1 else ""), "",
                  _level(report) + ".", "",
                  "| depth | " + " | ".join(f"{m} ({by[next(k for k in by if k[0] == m)]['epochs']} ep)"
                                           for m in methods) + " |",
                  "|---|" + "---|" * len(methods)]
        for d in depths:
            cells = []
            for m in methods:
                r = by.get((m, d, w))
                cells.append("n/a" if r is None else f"{cell(r['acc'])} {_ci(r['acc'], r['acc_ci95'], r.get('ci_n'))}")
            lines.append(f"| {d} | " + " | ".join(cells) + " |")
    paired = report["descendants"].get("paired") or []
    if paired:
        rank = {m: i for i, m in enumerate(report["descendants"]["methods"])}
        pairs = sorted(dict.fromkeys((p["a"], p["b"], p["epochs_a"], p["epochs_b"]) for p in paired),
                       key=lambda k: (rank.get(k[0], len(rank)), rank.get(k[1], len(rank)), k[2] == k[3]))
        shapes = sorted({(p["depth"], p.get("width")) for p in paired}, key=lambda k: (k[1] or 0, k[0]))
        several = len({w for _, w in shapes}) > 1
        lines += ["", "## Paired differences (points; same learngene, head, data order and augmentation)", "",
                  "a - b at each " + ("width and depth" if several else "depth") + ", paired by learngene and "
                  "descendant seed; bold: the 95% CI excludes 0.", "",
                  ("| width " if several else "") + "| depth | "
                  + " | ".join(f"{a} - {b}" + (f" ({ea} vs {eb} ep)" if ea != eb else f" ({ea} ep)")
                               for a, b, ea, eb in pairs) + " |",
                  ("|---" if several else "") + "|---|" + "---|" * len(pairs)]
        at = {(p["a"], p["b"], p["epochs_a"], p["epochs_b"], p["depth"], p.get("width")): p for p in paired}
        for d, w in shapes:
            lines.append((f"| {w} " if several else "") + f"| {d} | "
                         + " | ".join(_pts(at[(*k, d, w)]) if (*k, d, w) in at else "n/a" for k in pairs) + " |")
    lines += ["", "## Every row", "",
              "| method | depth | width | epochs | params | stored params | acc | 95% CI | curve (epoch: acc) |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        curve = ", ".join(f"{e}: {cell(a)}" for e, a in zip(r["curve"]["epochs"], r["curve"]["acc"]))
        same = f" (= {r['same_as']})" if r.get("same_as") else ""
        lines.append(f"| {r['method']}{same} | {r['depth']} | {r.get('width', '-')} | {r.get('epochs', '-')}"
                     f"{' (budget)' if r.get('budget') else ''} | {r['params']:,} | {r['stored_params']:,} | "
                     f"{cell(r['acc'])} | {_ci(r['acc'], r['acc_ci95'], r.get('ci_n'))} | {curve} |")
    few = report.get("fewshot") or {}
    if few:
        lines += ["", "## Few-shot episodes on the novel classes", ""]
        recipe = next(iter(few.values())).get("recipe")
        if recipe:
            lines += ["Every method by the individual recipe (imprinted cosine head, a head stage with the inherited "
                      "tensors frozen, then fine-tuning; `learngene.vit.fewshot`): " +
                      ", ".join(f"{k} {v}" for k, v in recipe.items()) + ". NCM: cosine nearest-class-mean on the "
                      "same descendant's untrained features.", ""]
        lines += ["| setting | method | depth | acc | 95% CI | NCM | 95% CI |", "|---|---|---|---|---|---|---|"]
        for setting, res in few.items():
            for r in res["rows"].values():
                n = r.get("ci_n")
                ncm = r.get("ncm_acc")
                lines.append(f"| {setting} | {r['method']} | {r['depth']} | {cell(r['acc'])} | "
                             f"{_ci(r['acc'], r['acc_ci95'], n)} | {cell(ncm)} | "
                             f"{_ci(ncm, r['ncm_ci95'], n) if ncm is not None else '-'} |")
        for setting, res in few.items():
            if res.get("paired"):
                lines += ["", f"Paired over the same {setting} episodes (points): " + "; ".join(
                    f"{p['a']} - {p['b']} @{p['depth']} {_pts(p)}" for p in res["paired"]) + "."]
    lin = report.get("linearity") or {}
    lines += ["", "## Linearity of the trained ancestry's weights in depth (TLEG's observation)", ""]
    if lin.get("skipped"):
        lines.append(f"skipped: {lin['skipped']}")
    else:
        s = lin["summary"]
        lines += [f"R² of a per-element linear fit against the block index, over {s['n_tensors']} block tensors of "
                  f"{s['depth']} blocks (the first learngene seed's ancestry); control: the same fit with the layer "
                  "order shuffled.", "",
                  "| statistic | layer order | shuffled |", "|---|---|---|",
                  f"| mean R² | {cell(s['mean_r2'])} | {cell(s['mean_r2_shuffled'])} |",
                  f"| median R² | {cell(s['median_r2'])} | {cell(s['median_r2_shuffled'])} |",
                  f"| pooled R² | {cell(s['pooled_r2'])} | {cell(s['pooled_r2_shuffled'])} |"]
    lines += ["", f"![accuracy against depth](plots/{ACCURACY_PLOT})", "",
              f"![accuracy against parameters](plots/{PARAMS_PLOT})", ""]
    return "\n".join(lines)


def _error_bars(pts: Sequence[tuple[Any, float, float | None]]) -> list[list[float]]:
    """(below, above) of every (x, acc, ci95) point: no bar without an interval (fewer than 3 values), and none past
    [0, 1]."""
    bounds = [clip(a, c) if c is not None and math.isfinite(c) else (a, a) for _, a, c in pts]
    return [[a - lo for (_, a, _), (lo, _) in zip(pts, bounds)], [hi - a for (_, a, _), (_, hi) in zip(pts, bounds)]]


def plot_accuracy_vs_depth(rows: Sequence[Mapping[str, Any]], path: str | Path | None = None, ax=None):
    """Final test accuracy against descendant depth, one line per method, 95% CIs as error bars."""
    from matplotlib.ticker import MaxNLocator

    fig = ax.figure if ax is not None else new_figure((6, 3.5))
    ax = ax or fig.add_subplot(111)

    methods = list(dict.fromkeys(r["method"] for r in rows))
    for i, m in enumerate(methods):
        pts = sorted((r["depth"], r["acc"], r["acc_ci95"]) for r in rows if r["method"] == m)
        err = _error_bars(pts)
        shift = 0.06 * (i - (len(methods) - 1) / 2)  # side by side, so the error bars stay readable
        ax.errorbar([p[0] + shift for p in pts], [p[1] for p in pts], yerr=err, marker="o", capsize=3, label=m)
    ax.set_ylim(0.0, 1.0)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("descendant depth (blocks)")
    ax.set_ylabel("test accuracy, novel classes")
    ax.set_title("descendants: accuracy against depth")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    if path is not None:
        save_figure(fig, path)
    return fig


def plot_accuracy_vs_params(rows: Sequence[Mapping[str, Any]], path: str | Path | None = None, ax=None):
    """Final test accuracy against the descendant's parameters (every depth and width), one line per method,
    95% CIs as error bars: what a user with a parameter budget reads."""
    fig = ax.figure if ax is not None else new_figure((6.5, 3.8))
    ax = ax or fig.add_subplot(111)
    methods = list(dict.fromkeys(r["method"] for r in rows if not r.get("same_as")))
    for m in methods:
        pts = sorted((r["params"], r["acc"], r["acc_ci95"]) for r in rows if r["method"] == m)
        err = _error_bars(pts)
        ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=err, marker="o", ms=3, capsize=2, label=m)
    ax.set_xscale("log")
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("descendant parameters (log scale)")
    ax.set_ylabel("test accuracy, novel classes")
    ax.set_title("descendants of every depth and width: accuracy against size")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    if path is not None:
        save_figure(fig, path)
    return fig
