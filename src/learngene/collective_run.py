"""The stages of the paradigm as functions over a run directory, shared by the CLI and the Python API.

A run directory holds: ``config.json`` (resolved config), ``stream.json`` (split + every task's images),
``checkpoints/``, ``collective.json`` (report), ``model/`` (final collective network: model.safetensors +
network.json), ``gradient_stats.*`` and ``plots/``.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import torch

from learngene.collective.learner import from_config
from learngene.config import Config, config_diff, config_from_dict
from learngene.data import ImageSet, TaskStream
from learngene.distributed import SINGLE, DistInfo, barrier
from learngene.errors import CheckpointError, LearngeneError
from learngene.models.io import load_network, save_network
from learngene.plots import plot_accuracy_matrix, plot_forgetting_curve, plot_params
from learngene.prepare import input_spec, load_data, make_split, make_stream
from learngene.safeio import (
    atomic_write_json,
    fresh_output,
    jsonable,
    output_lock,
    read_json,
)

MODEL_DIR = "model"


def cnn_stage(stage: str):
    """``fn(cfg, out, ...)`` as a stage of the CNN paradigm writing ``out``: a transformer config is refused before
    anything is written, then ``out``'s lock is held (rank 0 only), so two runs never write one directory."""

    def decorator(fn):
        @functools.wraps(fn)
        def wrapper(cfg, out, *args, dist: DistInfo = SINGLE, **kwargs):
            cfg.require_cnn(stage)
            if not dist.is_main:
                return fn(cfg, out, *args, dist=dist, **kwargs)
            with output_lock(out):
                return fn(cfg, out, *args, dist=dist, **kwargs)

        return wrapper

    return decorator


COLLECTIVE_OUTPUTS = ("collective.json", "config.json", "stream.json", MODEL_DIR, "checkpoints", "plots",
                      "baselines", "gradient_stats.json", "gradient_stats.safetensors")


def check_same_config(run_dir: str | Path, cfg: Config) -> None:
    """Refuse to resume ``run_dir`` with another configuration, naming the keys that differ.

    Why: a resumed run that silently took new values would report settings the model was not trained with.
    """
    saved = config_from_dict(read_json(Path(run_dir) / "config.json", "run config"))
    diff = config_diff(saved, cfg)
    finished = Path(run_dir) / "collective.json"
    if not diff and finished.is_file():  # the finished report must describe the same training
        recorded = read_json(finished, "collective report").get("config")
        diff = config_diff(config_from_dict(recorded), cfg) if isinstance(recorded, dict) else ["config"]
    if diff:
        shown = ", ".join(diff[:8]) + (f" and {len(diff) - 8} more" if len(diff) > 8 else "")
        raise CheckpointError(
            f"{run_dir} was started with a different configuration ({shown} differ); resume with the same "
            "--preset/--config/--set, or use a new --out directory"
        )


@cnn_stage("learngene collective")
def run_collective(
    cfg: Config,
    out: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    device: torch.device | str = "cpu",
    progress: bool = True,
    data: ImageSet | None = None,
    dist: DistInfo = SINGLE,
    part_of_run: bool = False,
) -> dict[str, Any]:
    """Train the collective model of ``cfg`` into ``out`` (or resume it) and write its report and plots.

    Under torchrun every rank trains (DDP) but only rank 0 checks the directory and writes files.
    ``part_of_run``: ``out`` is a stage of a larger run (``run``, ``tune``) that owns it.
    """
    out = Path(out)
    if dist.is_main and resume:
        if not (out / "checkpoints" / "latest.json").is_file():
            raise CheckpointError(
                f"--resume given but {out}/checkpoints/latest.json does not exist; start without --resume "
                "(with --overwrite if the directory is not empty)"
            )
        check_same_config(out, cfg)
    elif dist.is_main:
        fresh_output(out, kind="collective run", outputs=COLLECTIVE_OUTPUTS, overwrite=overwrite,
                     part_of_run=part_of_run)
    barrier(dist)
    data = data if data is not None else load_data(cfg)
    split = make_split(cfg, data)
    stream = make_stream(cfg, data, split)
    if resume and (out / "stream.json").is_file():
        saved_stream = read_json(out / "stream.json", "stream manifest")
        stream = TaskStream.from_manifest(data, saved_stream)
    spec = input_spec(data, split.source)
    if dist.is_main:
        atomic_write_json(out / "config.json", cfg.to_dict())
        stream.save_manifest(out / "stream.json")
    trainer = from_config(cfg, stream, spec, device=device, dist=dist)
    report = trainer.fit(ckpt_dir=out / "checkpoints", resume=resume, progress=progress)
    recorder = trainer.plugin("recorder").recorder
    if not dist.is_main:
        barrier(dist)  # wait until rank 0 has written the outputs that later stages read
        return report
    recorder.save(out)
    save_network(trainer.network, out / MODEL_DIR, fields={"input_spec": spec, "class_order": stream.class_order})
    plots = out / "plots"
    plot_forgetting_curve(report, plots / "forgetting_curve.png")
    plot_accuracy_matrix(report["accuracy_matrix_task_aware"]["R"], plots / "accuracy_matrix.png")
    plot_params(report, plots / "params.png")
    if recorder.records:
        recorder.plot_heatmap(plots / "gradient_heatmap.png")
    # written last: it marks the run finished, so a failure above (a full disk) leaves a run that --resume
    # completes from its final checkpoint
    atomic_write_json(out / "collective.json", jsonable(report))
    barrier(dist)
    return report


def load_collective_run(run_dir: str | Path) -> dict[str, Any]:
    """Everything later stages need from a finished collective run."""
    run_dir = Path(run_dir)
    if not (run_dir / "collective.json").is_file():
        raise LearngeneError(
            f"{run_dir} is not a finished collective run (no collective.json); run `learngene collective --out {run_dir}` first"
        )
    cfg = config_from_dict(read_json(run_dir / "config.json", "run config"))
    report = read_json(run_dir / "collective.json", "collective report")
    network, meta = load_network(run_dir / MODEL_DIR)
    return {"config": cfg, "report": report, "network": network, "meta": meta, "dir": run_dir,
            "stream_manifest": read_json(run_dir / "stream.json", "stream manifest")}


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=False)
