"""Markdown tables for humans, from the same dict that goes to report.json."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from learngene.safeio import atomic_write_bytes
from learngene.stats import format_ci


def _f(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return f"{x:,}" if isinstance(x, int) else str(x)


# below this many tasks a Student-t interval on an accuracy is too wide to mean anything (n = 2: t = 12.7)
MIN_N_FOR_CI = 5


def _ci(ci: Any, n: Any, mean: Any = None) -> str:
    """'±0.031'; an accuracy's interval cut by [0, 1] as '[0.950, 1.000]'; or why there is no interval."""
    if isinstance(n, int) and n < MIN_N_FOR_CI:
        return f"n = {n}: too few for a CI"
    if isinstance(mean, float) and isinstance(ci, float):
        return format_ci(mean, ci, n)
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
        ci = _ci(r["acc_ci95"], r["n"], r["acc_mean"])
        acc = f"{_f(r['acc_mean'])} " + (ci if ci.startswith(("±", "[")) else f"({ci})")
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
            shots = b["shots"] if isinstance(b["shots"], list) else [b["shots"]]
            source = (f"as many optimizer steps as joint ({b.get('joint_steps')})" if b.get("from_budget")
                      else "baseline.protonet_episodes")
            what = (f"{b['episodes']} episodes ({source}) of {b['ways']}-way {'/'.join(map(str, shots))}-shot "
                    f"{b['queries']}-query{' (in turn)' if len(shots) > 1 else ''}, cosine logits "
                    f"x{_f(b.get('scale'), 1)}, lr {_f(b.get('lr'), 4)}")
        lines.append(f"- `{name}`: {what}: {b['images_processed']:,} images processed, stream budget "
                     f"{b['budget_images']:,}; {_f(b.get('train_seconds'), 1)} s to train, cached in "
                     f"`{b.get('dir')}`")
    return lines


def lr_line(rates: dict[str, Any] | None) -> str | None:
    """Which trained methods had their own learning rate (chosen on pseudo-tasks) and which shared one."""
    if not rates:
        return None
    own = ", ".join(f"{m} {lr:g}" for m, lr in rates["own"].items())
    shared = ", ".join(rates["shared"])
    return ("- few-shot learning rates: " + (f"own (evaluate.method_lr): {own}" if own else "no method has its own")
            + (f"; individual.lr = {rates['individual_lr']:g} shared by {shared}" if shared else ""))


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
        *([lr_line(ind.get("learning_rates"))] if ind.get("learning_rates") else []),
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
        headline_verdict(ind),
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
        f"- one collective model (seed {report['seed']}): every interval here is over its target tasks; the "
        "interval over collective models, the outer random stage, needs several collective seeds "
        "(`python -m bench.seeds`: per-seed means, Student t with seeds - 1 degrees of freedom)",
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


def _points(x: float) -> str:
    return f"{100 * x:+.1f}"


def headline_verdict(ind: dict[str, Any], method: str = "learngene", reference: str = "scratch") -> str:
    """One plain sentence at the top of the report: who wins at the headline setting, by how much, and whether the
    paired interval excludes 0, said as plainly when the learngene loses.

    Why: the first table a newcomer sees is long; the question they bring is "does inheriting help here?".
    """
    setting = ind.get("headline")
    rows = ind.get("methods") or {}
    mine, ref = rows.get(method), rows.get(reference)
    if not mine or not ref:
        return f"At the headline setting ({setting}) there is no `{method}` and `{reference}` pair to compare."
    d = mine.get("vs_scratch") or {}
    diff, ci, n = d.get("mean"), d.get("ci95"), d.get("n")
    if diff is None or not isinstance(n, int):
        return f"At the headline setting ({setting}) the paired comparison of `{method}` with `{reference}` is missing."
    head = (f"**At the headline setting ({setting}), `{method}` scores {_f(mine['acc_mean'])} against "
            f"`{reference}`'s {_f(ref['acc_mean'])}")
    if n < MIN_N_FOR_CI or ci is None or not math.isfinite(ci):
        verdict = (f": {_points(diff)} points over {n} paired tasks, too few to tell (no interval with fewer than "
                   f"{MIN_N_FOR_CI}).**")
    else:
        lo, hi = diff - ci, diff + ci
        if lo > 0:
            word = f"`{method}` wins"
        elif hi < 0:
            word = f"`{method}` loses"
        else:
            word = "no clear winner"
        verdict = (f": {word}, by {_points(diff)} points (paired 95% CI {_points(lo)} to {_points(hi)} over {n} "
                   f"tasks, {'excluding' if lo > 0 or hi < 0 else 'including'} 0).**")
    trained = {m: r for m, r in rows.items() if not r.get("same_as") and math.isfinite(r.get("acc_mean", math.nan))}
    best = max(trained, key=lambda m: trained[m]["acc_mean"]) if trained else None
    tail = ""
    if best and best not in (method, reference):
        gap = trained[best]["acc_mean"] - mine["acc_mean"]
        tail = (f" The best row is `{best}` ({_f(trained[best]['acc_mean'])}, {100 * gap:.1f} points above "
                f"`{method}`, with {_f(trained[best].get('params'))} parameters against {_f(mine.get('params'))}).")
    elif best == method:
        tail = f" No other row scores higher than `{method}`."
    return head + verdict + tail


def write_report(report: dict[str, Any], path: str | Path) -> None:
    atomic_write_bytes(path, render(report).encode())


