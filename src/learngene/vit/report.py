"""The report of a transformer run: ``report.md`` (width x depth x method tables, storage, few-shot, R^2 check),
the accuracy-against-depth plot (the ancestry's width) and the accuracy-against-parameters plot (every shape)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from learngene.plots import new_figure, save_figure
from learngene.stats import mean_ci95

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


def render_vit_report(report: dict[str, Any]) -> str:
    """report.md of a transformer run: the depth x method table, storage, few-shot, R^2 check."""
    rows = report["descendants"]["rows"]
    methods = [m for m in report["descendants"]["methods"] if any(r["method"] == m for r in rows)]
    depths = sorted({r["depth"] for r in rows})
    widths = sorted({r.get("width") for r in rows if r.get("width") is not None})
    by = {(r["method"], r["depth"], r.get("width")): r for r in rows}
    anc, tleg, heur = report["ancestry"], report.get("tleg") or {}, report.get("heur_lg") or {}
    prot = report["descendants"]["protocol"]
    lines = [
        "# Transformer learngenes", "",
        f"Data {report['data']['name']}: ancestry on {report['data']['source_classes']} source classes; descendants "
        f"on {prot['classes']} novel classes ({prot['train']} train / {prot['test']} test images), "
        f"{prot['descendant_epochs']} epochs ({prot['scratch_epochs']} for scratch), seeds {prot['seeds']}.",
        f"Ancestry: {anc['depth']} blocks, {anc['params']:,} parameters, source val accuracy {cell(anc.get('val_acc'))}.",
    ]
    user = anc.get("user")
    if user:
        adapted = f"; adapted: {'; '.join(user['adapted'])}" if user.get("adapted") else ""
        lines.append(f"The ancestry is the user's {user.get('timm') or 'ViT'} from `{user['weights']}` (sha256 "
                     f"{user['sha256'][:12]}...): a fresh source-class head probed for {user['probe_epochs']} epoch(s), "
                     f"then fine-tuned for {user['fine_tune_epochs']} epoch(s){adapted}.")
    if tleg:
        lines.append(f"TLEG: {tleg['rule']['name']} rule, auxiliary depth {tleg['aux_depth']}, val accuracy "
                     f"{cell(tleg.get('val_acc'))}; learngene stores {tleg['stored_params']:,} parameters "
                     f"({tleg['stored_fraction_of_ancestry']:.1%} of the ancestry).")
    if heur:
        lines.append(f"Heur-LG: ancestry blocks {heur['selected']} by {heur['name']}; learngene stores "
                     f"{heur['stored_params']:,} parameters.")
    fresh = report.get("frequency") or {}
    if fresh:
        lines.append(f"Frequency learngene: DCT coefficients kept {fresh['keep']:g} per axis {fresh['kept']}; stores "
                     f"{fresh['stored_params']:,} parameters ({fresh['stored_fraction_of_ancestry']:.1%} of the "
                     "ancestry, no head on either side); no training.")
    rules = report["descendants"].get("width_rules") or {}
    if len(widths) > 1 and rules:
        lines += ["", "Width rules: " + "; ".join(f"{m}: {rules[m]}" for m in methods if m in rules) + "."]
    n_seeds = len(prot["seeds"])
    for w in widths or [None]:
        title = "## Test accuracy on the novel classes (mean ± 95% CI over seeds)"
        lines += ["", title + (f", width {w}" if len(widths) > 1 else ""), "",
                  f"Student-t intervals over {n_seeds} seed(s)" + (": with fewer than 5 they are wide, read them as "
                                                                  "indicative" if n_seeds < 5 else "") + ".", "",
                  "| depth | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
        for d in depths:
            cells = []
            for m in methods:
                r = by.get((m, d, w))
                cells.append("n/a" if r is None else f"{cell(r['acc'])} ± {cell(r['acc_ci95'])}")
            lines.append(f"| {d} | " + " | ".join(cells) + " |")
    lines += ["", "## Every row", "",
              "| method | depth | width | params | stored params | acc | 95% CI | curve (epoch: acc) |",
              "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        curve = ", ".join(f"{e}: {cell(a)}" for e, a in zip(r["curve"]["epochs"], r["curve"]["acc"]))
        same = f" (= {r['same_as']})" if r.get("same_as") else ""
        lines.append(f"| {r['method']}{same} | {r['depth']} | {r.get('width', '-')} | {r['params']:,} | "
                     f"{r['stored_params']:,} | {cell(r['acc'])} | {cell(r['acc_ci95'])} | {curve} |")
    few = report.get("fewshot") or {}
    if few:
        lines += ["", "## Few-shot episodes on the novel classes", "", "| setting | method | depth | acc | 95% CI |",
                  "|---|---|---|---|---|"]
        for setting, res in few.items():
            for r in res["rows"].values():
                lines.append(f"| {setting} | {r['method']} | {r['depth']} | {cell(r['acc'])} | {cell(r['acc_ci95'])} |")
    lin = report.get("linearity") or {}
    lines += ["", "## Linearity of the trained ancestry's weights in depth (TLEG's observation)", ""]
    if lin.get("skipped"):
        lines.append(f"skipped: {lin['skipped']}")
    else:
        s = lin["summary"]
        lines += [f"R² of a per-element linear fit against the block index, over {s['n_tensors']} block tensors of "
                  f"{s['depth']} blocks; control: the same fit with the layer order shuffled.", "",
                  "| statistic | layer order | shuffled |", "|---|---|---|",
                  f"| mean R² | {cell(s['mean_r2'])} | {cell(s['mean_r2_shuffled'])} |",
                  f"| median R² | {cell(s['median_r2'])} | {cell(s['median_r2_shuffled'])} |",
                  f"| pooled R² | {cell(s['pooled_r2'])} | {cell(s['pooled_r2_shuffled'])} |"]
    lines += ["", f"![accuracy against depth](plots/{ACCURACY_PLOT})", "",
              f"![accuracy against parameters](plots/{PARAMS_PLOT})", ""]
    return "\n".join(lines)


def plot_accuracy_vs_depth(rows: Sequence[Mapping[str, Any]], path: str | Path | None = None, ax=None):
    """Final test accuracy against descendant depth, one line per method, 95% CIs as error bars."""
    from matplotlib.ticker import MaxNLocator

    fig = ax.figure if ax is not None else new_figure((6, 3.5))
    ax = ax or fig.add_subplot(111)

    methods = list(dict.fromkeys(r["method"] for r in rows))
    for i, m in enumerate(methods):
        pts = sorted((r["depth"], r["acc"], r["acc_ci95"]) for r in rows if r["method"] == m)
        err = [0.0 if c is None or not math.isfinite(c) else c for _, _, c in pts]
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
        err = [0.0 if c is None or not math.isfinite(c) else c for _, _, c in pts]
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
