"""Markdown tables for humans, from the same dict that goes to report.json."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from learngene.safeio import atomic_write_bytes


def _f(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return f"{x:,}" if isinstance(x, int) else str(x)


# below this many tasks a Student-t interval on an accuracy is too wide to mean anything (n = 2: t = 12.7)
MIN_N_FOR_CI = 5


def _ci(ci: Any, n: Any) -> str:
    if isinstance(n, int) and n < MIN_N_FOR_CI:
        return f"n = {n}: too few for a CI"
    return f"±{_f(ci)}"


def _paired(d: dict[str, Any] | None) -> str:
    """'+0.050 ±0.031 *' (the star: its interval excludes 0), or a dash without a comparison."""
    if not d:
        return "-"
    mean = d.get("mean")
    sign = "+" if isinstance(mean, float) and mean >= 0 else ""
    n = d.get("n")
    if isinstance(n, int) and n < MIN_N_FOR_CI:
        return f"{sign}{_f(mean)} ({_ci(None, n)})"
    return f"{sign}{_f(mean)} {_ci(d.get('ci95'), n)}" + (" *" if d.get("ci_excludes_0") else "")


def methods_table(methods: dict[str, Any]) -> str:
    """One row per method, about 90 characters wide: accuracy with its CI, the paired difference to scratch,
    parameters with the inherited ones in brackets; the number of tasks is stated once below when it is
    the same for every row (it is, on shared episodes)."""
    ns = {r["n"] for r in methods.values()}
    same_n = len(ns) == 1
    head = ["method", "accuracy ±95% CI", "vs scratch (paired)", "params (inherited)", "epochs to 90%", "s/task"]
    if not same_n:
        head.insert(3, "n")
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m, r in methods.items():
        name = f"{m} (= {r['same_as']})" if r.get("same_as") else m
        ci = _ci(r["acc_ci95"], r["n"])
        acc = f"{_f(r['acc_mean'])} " + (ci if ci.startswith("±") else f"({ci})")
        cells = [name, acc, _paired(r.get("vs_scratch")), f"{_f(r['params'])} ({_f(r['inherited_params'])})",
                 _f(r.get("epochs_to_90pct_final")), _f(r["train_seconds_mean"], 2)]
        if not same_n:
            cells.insert(3, str(r["n"]))
        rows.append("| " + " | ".join(cells) + " |")
    n = f"n = {ns.pop()} tasks per row; " if same_n and ns else ""
    rows += ["", f"{n}* the paired 95% CI of the difference to scratch excludes 0"]
    return "\n".join(rows)


def calibration_line(methods: dict[str, Any]) -> str:
    """The trained rows' calibration error: their softmax scores are not probabilities, and this says how far."""
    eces = {m: r["ece_mean"] for m, r in methods.items() if r.get("ece_mean") is not None and not r.get("same_as")}
    if not eces:
        return ""
    return ("calibration (ECE of the top softmax score on the query images, mean over tasks; 0 = a score of 0.9 is "
            "right 90% of the time): " + ", ".join(f"{m} {_f(v)}" for m, v in eces.items())
            + ". The scores are softmax outputs, not probabilities.")


def baselines_lines(baselines: dict[str, Any]) -> list[str]:
    """How the trained references were budgeted: the numbers behind 'same budget as the stream'."""
    lines = []
    for name, b in baselines.items():
        if "skipped" in b:
            lines.append(f"- `{name}`: skipped ({b['skipped']})")
            continue
        if name == "joint":
            what = (f"{b['epochs']} epochs over {b['train_images']:,} images of {b['classes']} classes "
                    f"{'(from the stream budget)' if b.get('from_budget') else '(baseline.joint_epochs)'}")
        else:
            source = "(from the stream budget)" if b.get("from_budget") else "(baseline.protonet_episodes)"
            what = (f"{b['episodes']} episodes of {b['ways']}-way {b['shots']}-shot {b['queries']}-query, "
                    f"cosine logits x{_f(b.get('scale'), 1)} {source}")
        lines.append(f"- `{name}`: {what}: {b['images_processed']:,} images processed, stream budget "
                     f"{b['budget_images']:,}; {_f(b.get('train_seconds'), 1)} s to train, cached in "
                     f"`{b.get('dir')}`")
    return lines


def _widths_line(coll: dict[str, Any]) -> str:
    """Nominal vs effective (distinct-channel) widths: copies left by widening are not capacity."""
    final = coll["final"]
    if "effective_widths" not in final:
        return f"- widths {final.get('widths')}"
    tol = final.get("tolerance") or {}
    mem = coll.get("memory") or {}
    memory = (f"; exemplar memory {mem['per_class']} per class ({mem['images']:,} images)"
              if mem.get("per_class") else "")
    return (f"- widths {final['widths']}, effective {final['effective_widths']} (distinct channels within rtol "
            f"{tol.get('rtol')} / atol {tol.get('atol')}); {final['effective_params']:,} effective parameters"
            + memory)


def _gene_line(gene: dict[str, Any], final: dict[str, Any], individual: dict[str, Any]) -> str:
    if "params" not in gene:
        return "- learngene: -"
    eff = gene.get("effective_params")
    share = (f", {100 * eff / final['effective_params']:.0f}% of the collective's effective parameters"
             if eff and final.get("effective_params") else "")
    ind = (individual.get("methods") or {}).get("learngene") or {}
    of_ind = (f"; {100 * gene['params'] / ind['params']:.0f}% of the headline individual model's "
              f"{ind['params']:,}" if ind.get("params") else "")
    return (f"- learngene: {', '.join(gene.get('layers', []))}, {gene['params']:,} parameters"
            + (f" ({eff:,} effective{share})" if eff else "") + of_ind)


def _settings_lines(ind: dict[str, Any]) -> list[str]:
    """Each evaluation setting's table, its calibration line and the collective-vs-joint gap."""
    lines: list[str] = []
    for setting, res in ind["settings"].items():
        lines += [f"## {setting}" + (" (headline)" if setting == ind["headline"] else ""), "",
                  methods_table(res["methods"]), ""]
        calib = calibration_line(res["methods"])
        if calib:
            lines += [calib, ""]
        gap = res.get("ncm_collective_minus_joint")
        if gap:
            few = isinstance(gap.get("n"), int) and gap["n"] < MIN_N_FOR_CI
            excludes = "-" if few else "yes" if gap.get("ci_excludes_0") else "no"
            lines += [f"ncm-collective - joint (paired over {gap['n']} episodes): "
                      f"{_paired(gap).removesuffix(' *')}, CI excludes 0: {excludes}", ""]
    return lines


def _evaluation_note(ind: dict[str, Any]) -> list[str]:
    return [
        f"- evaluation: {ind['episodes_per_seed']} episodes x seeds {ind['seeds']}, {ind['queries_per_class']} "
        f"queries per class; {ind['ci']}" + (f"; {ind['paired_ci']}" if ind.get("paired_ci") else ""),
        "- \"vs scratch\" is the paired difference to `scratch` on the same episodes; \"epochs to 90%\" is the "
        "first evaluated epoch at which the mean query accuracy reaches 90% of that method's final accuracy "
        f"(a convergence speed, not an accuracy); with fewer than {MIN_N_FOR_CI} episodes no CI is printed",
    ]


def render_evaluation(ind: dict[str, Any], *, run_dir: Any, gene_dir: Any) -> str:
    """evaluation.md of `learngene evaluate`: the same tables as report.md, for one gene on one run."""
    lines = ["# learngene evaluation", "", f"- collective run: `{run_dir}`", f"- learngene: `{gene_dir}`",
             *_evaluation_note(ind), "", *_settings_lines(ind)]
    if ind.get("baselines"):
        lines += ["## Reference baselines", "", *baselines_lines(ind["baselines"]), ""]
    return "\n".join(lines) + "\n"


def render(report: dict[str, Any]) -> str:
    ind = report["individual"]
    coll = report["collective"]
    crit = report["criterion"]
    ow = coll.get("open_world") or {}
    lines = [
        "# learngene report",
        "",
        f"- data: `{report['data']}`, seed {report['seed']}, learngene {report['version']}",
        f"- split: {len(report['split']['source'])} source / {len(report['split']['open_world'])} open-world / "
        f"{len(report['split']['novel'])} novel classes",
        f"- collective model: {coll['n_tasks']} tasks, final average accuracy {_f(coll['final']['average_accuracy'])}, "
        f"forgetting {_f(coll['final']['forgetting'])}, open-world AUROC {_f(ow.get('auroc'))}, "
        f"FPR@95%TPR {_f(ow.get('fpr95'))}, {coll['final']['params']:,} parameters",
        _widths_line(coll),
        _gene_line(report.get("gene") or {}, coll["final"], ind),
        f"- criterion `{crit['name']}` selected {', '.join(crit['selected'])}: {crit['reason']}",
        *_evaluation_note(ind),
        "",
        *_settings_lines(ind),
    ]
    if ind.get("baselines"):
        lines += ["## Reference baselines", "",
                  "`ncm-*`, `joint` and `protonet` rows: cosine nearest class mean on frozen features, no "
                  "training on the target task; `ncm-gene` uses the collective network's blocks up to the "
                  "gene's last one.",
                  "", *baselines_lines(ind["baselines"]), ""]
    lines += ["## Criterion candidates", "", "| layers | score | grad fraction (mean) | std over tasks |", "|---|---|---|---|"]
    for c in crit["candidates"]:
        lines.append(f"| {', '.join(c['layers'])} | {_f(c['score'])} | {_f(c.get('grad_fraction_mean'), 5)} | "
                     f"{_f(c.get('grad_fraction_std_over_tasks'), 5)} |")
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, Any], path: str | Path) -> None:
    atomic_write_bytes(path, render(report).encode())


