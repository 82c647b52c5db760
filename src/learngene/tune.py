"""Choose settings on pseudo-tasks from source classes, never on the novel target classes.

``learngene tune --preset omniglot --param train.ewc_lambda=10,20,40 --param train.memory_per_class=0,5``
trains the collective model for every combination of the values (and every ``--seeds`` seed) and scores each
on few-shot pseudo-tasks drawn from the criterion's pool: source classes that the stream never used (the open
world, never the novel classes, when the stream used them all). The score is nearest-class-mean accuracy on
the collective model's frozen features, which measures the representation apart from any fine-tuning; the
stream's own accuracy, forgetting and effective parameters are reported beside it. With ``joint=True`` the same
backbone trained jointly on the stream's classes (same image budget) is scored on the same pseudo-tasks, so
the table also shows each trial's gap to that bound.

Every finished trial is written at once to ``trials/``; a rerun into the same ``--out`` skips finished trials, so
an interrupted tuning loses at most the trial in progress.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from learngene.baselines import ncm_episodes, penultimate_features, train_joint
from learngene.collective_run import load_collective_run, run_collective
from learngene.config import Config, apply_overrides, config_from_dict, parse_setting
from learngene.data import TaskStream, sample_episodes
from learngene.errors import CheckpointError, ConfigError
from learngene.evaluate import evaluate_methods
from learngene.gene import Learngene
from learngene.prepare import load_data
from learngene.registry import METHODS
from learngene.run import pseudo_pool, select_gene
from learngene.runtime import derive_seed
from learngene.safeio import (
    atomic_write_bytes,
    atomic_write_json,
    check_writable_dir,
    fresh_output,
    jsonable,
    read_json,
)
from learngene.stats import MIN_N_CI, format_ci, mean_ci95, nested_ci95

log = logging.getLogger(__name__)

TUNE_OUTPUTS = ("tune.json", "tune.md", "trials", "runs")  # what --overwrite replaces


def parse_param(spec: str) -> tuple[str, list[str]]:
    """``"train.ewc_lambda=10,20,40"`` -> ``("train.ewc_lambda", ["10", "20", "40"])`` (values stay TOML text)."""
    if "=" not in spec:
        raise ConfigError(f"--param {spec!r} must look like section.key=v1,v2,..., e.g. train.ewc_lambda=10,20,40")
    key, raw = spec.split("=", 1)
    values = [v.strip() for v in _split_values(raw) if v.strip()]
    if not key.strip() or not values:
        raise ConfigError(f"--param {spec!r} names no key or no values; e.g. train.ewc_lambda=10,20,40")
    return key.strip(), values


def _split_values(raw: str) -> list[str]:
    """Split on commas outside brackets and quotes, so list values such as [32,32] stay whole."""
    out, depth, quote, cur = [], 0, None, ""
    for ch in raw:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(cur)
            cur = ""
            continue
        cur += ch
    out.append(cur)
    return out


def grid(params: Sequence[tuple[str, list[str]]]) -> list[list[str]]:
    """Every combination of the values, as lists of ``key=value`` overrides."""
    keys = [k for k, _ in params]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"--param names a key twice: {keys}; give all its values in one --param")
    return [[f"{k}={v}" for k, v in zip(keys, combo)] for combo in itertools.product(*(v for _, v in params))]


def _trial_config(base: Config, overrides: list[str], seed: int) -> Config:
    cfg = config_from_dict(base.to_dict())
    return apply_overrides(cfg, [*overrides, f"seed={seed}"])


def _score(cfg: Config, data, stream, network, spec, setting: str, episodes: int) -> dict[str, Any]:
    pool, where = pseudo_pool(stream)
    ways, shots = parse_setting(setting)
    if len(pool) < ways:
        raise ConfigError(f"the pseudo-task pool ({where}) has {len(pool)} classes, fewer than {ways} ways; "
                          "tune with a smaller --setting")
    eps = sample_episodes(data, pool, ways, shots, cfg.evaluate.queries, episodes,
                          seed=derive_seed(cfg.seed, "tune-episodes", setting) % (2**31))
    accs = ncm_episodes(penultimate_features(network), data, eps, spec)
    mean, ci = mean_ci95(accs)
    return {"ncm": mean, "ncm_ci95": ci, "accuracies": accs, "pool": where, "pool_classes": len(pool)}


# sections that do not change the collective model: trials that differ only there share one collective run
_LATER_STAGES = ("criterion", "individual", "evaluate", "baseline")


def _collective_run(cfg: Config, base: Config, runs: Path, data, progress: bool) -> tuple[Path, dict[str, Any]]:
    """Train (or reuse, or resume) the collective model of ``cfg`` in ``runs/<hash of its settings>/``."""
    shared = cfg.to_dict()
    for section in _LATER_STAGES:
        shared[section] = base.to_dict()[section]
    ccfg = config_from_dict(shared)
    digest = hashlib.sha256(json.dumps(ccfg.to_dict(), sort_keys=True).encode()).hexdigest()[:12]
    run_dir = runs / f"seed{cfg.seed}-{digest}"
    if not (run_dir / "collective.json").is_file():
        resume = (run_dir / "checkpoints" / "latest.json").is_file()
        run_collective(ccfg, run_dir, resume=resume, overwrite=True, progress=progress, data=data,
                       part_of_run=True)
    return run_dir, read_json(run_dir / "collective.json", "collective report")


def _score_individual(cfg: Config, data, run_dir: Path, stream: TaskStream, setting: str, episodes: int,
                      method: str = "learngene") -> dict[str, Any]:
    """A comparison method's accuracy on pseudo-tasks: the score for individual.*, evaluate.method_lr.* and
    baseline.protonet_* settings. Trained methods are scored beside ``scratch``; ``protonet`` (nearest class
    mean on a backbone trained on the stream) is trained per trial, cached under the trial's settings."""
    row = METHODS.get(method)
    with_scratch = row.build is not None and method != "scratch"
    gene = None
    if row.build is not None:  # the individual architecture (scratch too) is built around the gene
        crit = hashlib.sha256(json.dumps(cfg.to_dict()["criterion"], sort_keys=True).encode()).hexdigest()[:12]
        gene_dir = run_dir / f"gene-{crit}"
        gene = Learngene.load(gene_dir) if (gene_dir / "learngene.json").is_file() else \
            select_gene(run_dir, gene_dir, cfg=cfg, data=data, part_of_run=True, overwrite=True)[0]
    run = load_collective_run(run_dir)
    ecfg = config_from_dict(cfg.to_dict())
    ecfg.evaluate.settings, ecfg.evaluate.headline = [setting], setting
    ecfg.evaluate.episodes, ecfg.evaluate.seeds = episodes, [0]
    network = run["network"]
    trained = {k: cfg.to_dict()[k] for k in ("train", "baseline")}
    cache = run_dir / "baselines-tune" / hashlib.sha256(json.dumps(trained, sort_keys=True).encode()).hexdigest()[:12]
    methods = [method, "scratch"] if with_scratch else [method]
    res = evaluate_methods(ecfg, data, pseudo_pool(stream)[0], network, gene, network.conv_layer_names(),
                           run["meta"]["input_spec"], methods=methods, progress=False, stream=stream,
                           cache_dir=cache if row.needs_stream else None)["settings"][setting]["methods"]
    accs = res[method]["accuracies"]
    mean, ci = mean_ci95(accs)
    return {"method": method, "score": mean, "score_ci95": ci, "accuracies": accs, "lr": res[method].get("lr"),
            "gene": gene.layer_names if gene is not None else [],
            "scratch": res["scratch"]["acc_mean"] if with_scratch else None,
            "vs_scratch": res[method].get("vs_scratch")}


def run_trial(cfg: Config, data, *, setting: str, episodes: int, joint: bool, progress: bool,
              base: Config, runs: Path, score: str = "ncm", method: str = "learngene") -> dict[str, Any]:
    """Train (or reuse) one collective model and its joint reference, and score both on pseudo-tasks."""
    run_dir, report = _collective_run(cfg, base, runs, data, progress)
    run = load_collective_run(run_dir)
    stream = TaskStream.from_manifest(data, run["stream_manifest"])
    spec = run["meta"]["input_spec"]
    network = run["network"].cpu().eval()
    seconds = sum(t.get("train_seconds", 0.0) for t in report["tasks"])
    out: dict[str, Any] = {
        "seed": cfg.seed,
        "collective": _score(cfg, data, stream, network, spec, setting, episodes),
        "stream": {k: report["final"][k] for k in ("average_accuracy", "average_accuracy_class_incremental",
                                                   "forgetting", "params", "effective_params", "widths",
                                                   "effective_widths")},
        "memory": report["memory"],
        "images_seen": report["images_seen"],
        "train_seconds": seconds,
    }
    if joint:
        # the same image budget as the stream, replayed exemplars included
        jnet, info = train_joint(network.config(), stream, spec, cfg, budget_images=report["images_seen"])
        out["joint"] = {**_score(cfg, data, stream, jnet, spec, setting, episodes), "epochs": info["epochs"]}
    if score == "individual":
        out["individual"] = _score_individual(cfg, data, run_dir, stream, setting, episodes, method)
    return out


def tune(base: Config, params: Sequence[tuple[str, list[str]]], out: str | Path, *, seeds: Sequence[int] = (0,),
         setting: str | None = None, episodes: int = 20, joint: bool = False, progress: bool = True,
         data=None, score: str = "ncm", method: str = "learngene", resume: bool = False,
         overwrite: bool = False) -> dict[str, Any]:
    """Run the grid, write ``tune.json`` and ``tune.md`` into ``out``; returns the summary (best first).

    ``score="ncm"`` ranks by the collective model's NCM accuracy; ``score="individual"`` by the accuracy of the
    learngene's individual models (criterion, gene and few-shot training as configured) on the same kind of
    pseudo-tasks, for settings of the later stages; ``method`` names the comparison method scored that way
    (``scratch``, ``finetune``, ... for their ``evaluate.method_lr``; ``protonet`` for ``baseline.protonet_*``).
    Collective runs are kept in ``out/runs/`` and shared by every trial that differs only in later-stage settings.
    Like every command, a non-empty ``out`` is refused unless ``overwrite`` (start afresh) or ``resume`` (keep
    the finished trials and collective runs there).
    """
    base.require_cnn("learngene tune")
    if score not in ("ncm", "individual"):
        raise ConfigError(f"tune score must be 'ncm' or 'individual', got {score!r}")
    METHODS.check(method, "the tuned method (--method)")
    if method != "learngene" and score != "individual":
        raise ConfigError(f"--method {method} scores that method's accuracy: use it with --score individual")
    setting = setting or base.evaluate.headline
    parse_setting(setting)
    combos = grid(params)
    for combo in combos:  # every combination is a valid config before anything trains
        _trial_config(base, combo, seeds[0])
    if resume:  # finished trials (and collective runs) are reused; a changed trial is trained again
        if not ((Path(out) / "trials").is_dir() or (Path(out) / "runs").is_dir()):
            raise CheckpointError(f"--resume given but {out} holds no tuning trials (no trials/ or runs/ folder); "
                                  "start without --resume")
        out = check_writable_dir(out, overwrite=True, kind="tuning run")
    else:
        out = fresh_output(out, kind="tuning run", outputs=TUNE_OUTPUTS, overwrite=overwrite)
    (out / "trials").mkdir(parents=True, exist_ok=True)
    data = data if data is not None else load_data(base)
    rows = []
    for i, combo in enumerate(combos):
        trials = []
        for seed in seeds:
            cfg = _trial_config(base, combo, seed)
            path = out / "trials" / f"{i:03d}-seed{seed}.json"
            key = {"config": cfg.to_dict(), "setting": setting, "episodes": episodes, "joint": joint}
            if score != "ncm":
                key["score"] = score
            if method != "learngene":
                key["method"] = method
            if path.is_file():
                saved = read_json(path, "tuning trial")
                if saved.get("key") == json.loads(json.dumps(jsonable(key))):
                    trials.append(saved["result"])
                    continue
            log.info("trial %d/%d seed %d: %s", i + 1, len(combos), seed, " ".join(combo) or "(base)")
            result = run_trial(cfg, data, setting=setting, episodes=episodes, joint=joint, progress=progress,
                               base=base, runs=out / "runs", score=score, method=method)
            atomic_write_json(path, jsonable({"key": key, "result": result}))
            trials.append(result)
        rows.append(_summarize(combo, trials))
    rank = "individual" if score == "individual" else "ncm"
    rows.sort(key=lambda r: -r[rank])
    what = (f"accuracy of the `{method}` method ({METHODS.get(method).description})" if score == "individual" else
            "NCM (cosine) accuracy of the collective model's penultimate features")
    summary = {"setting": setting, "episodes_per_seed": episodes, "seeds": list(seeds),
               "pool": rows[0]["pool"] if rows else None, "params": [k for k, _ in params], "ranked_by": rank,
               "score": f"{what} on pseudo-tasks",
               "ci": ci_statement(len(seeds)), "rows": rows,
               "base_config": base.to_dict(),
               "chosen": rows[0]["overrides"] if rows else None, "tie": tie_note(rows, rank)}
    atomic_write_json(out / "tune.json", jsonable(summary))
    atomic_write_bytes(out / "tune.md", tune_markdown(summary).encode())
    return summary


def _level(groups: list[list[float]]) -> tuple[float, float]:
    """Mean and 95% interval at the level of the randomness: over the collective seeds' means when there are
    at least MIN_N_CI seeds, else over the pseudo-tasks of the (one or two) collective models."""
    nested = nested_ci95(groups)
    return nested["mean"], nested["ci95"] if nested["n"] >= MIN_N_CI else nested["tasks_ci95"]


def ci_statement(n_seeds: int) -> str:
    if n_seeds >= MIN_N_CI:
        return (f"95% Student-t interval over the {n_seeds} collective seeds' mean scores ({n_seeds - 1} degrees "
                "of freedom: the variation between collective models in full)")
    return (f"95% Student-t interval over the pseudo-tasks of {n_seeds} collective model(s), conditional on them "
            f"(an interval over collective seeds needs --seeds with at least {MIN_N_CI} seeds)")


def tie_note(rows: list[dict[str, Any]], rank: str) -> str | None:
    """A note when the chosen (first) row's score lies within the runner-up's interval: the data do not
    separate them, whatever the ranking says."""
    if len(rows) < 2:
        return None
    best, second = rows[0], rows[1]
    ci = second.get(f"{rank}_ci95", float("nan"))
    what = " ".join(second["overrides"]) or "(preset)"
    if not math.isfinite(ci):
        return f"the runner-up ({what}) has no interval, so whether the choice is a tie cannot be told"
    if abs(best[rank] - second[rank]) <= ci:
        return (f"tie: the chosen score {best[rank]:.3f} lies within the runner-up's interval ({what}: "
                f"{second[rank]:.3f} ±{ci:.3f}); the ranking alone picked it")
    return None


def _summarize(combo: list[str], trials: list[dict[str, Any]]) -> dict[str, Any]:
    accs = [a for t in trials for a in t["collective"]["accuracies"]]
    mean, ci = _level([t["collective"]["accuracies"] for t in trials])
    row: dict[str, Any] = {"overrides": combo, "ncm": mean, "ncm_ci95": ci, "n": len(accs), "seeds": len(trials),
                           "pool": trials[0]["collective"]["pool"]}
    for k in ("average_accuracy", "average_accuracy_class_incremental", "forgetting", "params",
              "effective_params"):
        row[k] = sum(t["stream"][k] for t in trials) / len(trials)
    row["memory_images"] = sum(t["memory"]["images"] for t in trials) / len(trials)
    row["train_seconds"] = sum(t["train_seconds"] for t in trials) / len(trials)
    if all("individual" in t for t in trials):
        row["individual"], row["individual_ci95"] = _level([t["individual"]["accuracies"] for t in trials])
        scratch = [t["individual"]["scratch"] for t in trials]
        row["scratch"] = None if None in scratch else sum(scratch) / len(trials)
        row["gene"] = trials[0]["individual"]["gene"]
        row["method"] = trials[0]["individual"].get("method", "learngene")
    if all("joint" in t for t in trials):
        row["joint_ncm"], row["joint_ncm_ci95"] = _level([t["joint"]["accuracies"] for t in trials])
        row["gap_to_joint"], row["gap_to_joint_ci95"] = _level(
            [[a - b for a, b in zip(t["collective"]["accuracies"], t["joint"]["accuracies"])] for t in trials])
    return row


def _fmt(mean: float, ci: float, bounded: bool = True) -> str:
    return f"{mean:.3f} {format_ci(mean, ci, bounded=bounded)}" if ci == ci else f"{mean:.3f} (too few for a CI)"


def tune_markdown(summary: dict[str, Any]) -> str:
    joint = any("joint_ncm" in r for r in summary["rows"])
    head = ["settings", f"NCM {summary['setting']}", "stream acc (task-aware)", "class-IL acc", "forgetting",
            "params (effective)", "memory images", "train s"]
    individual = any("individual" in r for r in summary["rows"])
    if joint:
        head[2:2] = ["joint NCM", "gap to joint (paired)"]
    if individual:
        head[1:1] = [f"{summary['rows'][0].get('method', 'learngene')} {summary['setting']}", "scratch", "gene"]
    lines = [
        f"# Tuning on pseudo-tasks ({summary['pool']})",
        "",
        f"Score: {summary['score']}, {summary['setting']}, {summary['episodes_per_seed']} episodes per seed, "
        f"seeds {summary['seeds']}; {summary['ci']}. Best first; chosen: `{' '.join(summary['chosen'] or [])}`"
        + (f" ({summary['tie']})." if summary.get("tie") else "."),
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in summary["rows"]:
        cells = [" ".join(r["overrides"]) or "(preset)", _fmt(r["ncm"], r["ncm_ci95"]),
                 f"{r['average_accuracy']:.3f}", f"{r['average_accuracy_class_incremental']:.3f}",
                 f"{r['forgetting']:.3f}", f"{r['params']:,.0f} ({r['effective_params']:,.0f})",
                 f"{r['memory_images']:.0f}", f"{r['train_seconds']:.0f}"]
        if joint:
            cells[2:2] = [_fmt(r["joint_ncm"], r["joint_ncm_ci95"]),
                          _fmt(r["gap_to_joint"], r["gap_to_joint_ci95"], bounded=False)]
        if individual:
            cells[1:1] = [_fmt(r["individual"], r["individual_ci95"]),
                          "-" if r["scratch"] is None else f"{r['scratch']:.3f}", ", ".join(r["gene"]) or "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
