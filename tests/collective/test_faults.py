"""SIGKILL a real `learngene collective` process at several points, resume it, and compare with a clean run."""

import json
import os
import signal
import subprocess
import sys

import pytest

from learngene.checkpoint import load_latest
from learngene.collective.trainer import CHECKPOINT_FORMAT

pytestmark = pytest.mark.slow

ARGS = ["collective", "--preset", "smoke", "--quiet", "--device", "cpu", "--set", "stream.tasks=3"]


def _cli(out, *extra, kill_at=None):
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    env.pop("LEARNGENE_KILL_AT", None)
    if kill_at:
        env["LEARNGENE_KILL_AT"] = kill_at
    return subprocess.run([sys.executable, "-m", "learngene", *ARGS, "--out", str(out), *extra], env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    out = tmp_path_factory.mktemp("clean") / "run"
    proc = _cli(out)
    assert proc.returncode == 0, proc.stderr
    return json.loads((out / "collective.json").read_text())


@pytest.mark.parametrize("point", ["batch:7", "checkpoint_write:2", "task_end:2", "growth:1", "checkpoint_write:5"])
def test_killed_run_resumes_to_the_same_result(point, clean, tmp_path):
    out = tmp_path / "run"
    proc = _cli(out, kill_at=point)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr[-2000:])
    assert not (out / "collective.json").exists()
    if (out / "checkpoints" / "latest.json").exists():
        state = load_latest(out / "checkpoints")  # whatever is published is complete and verified
        assert state["format"] == CHECKPOINT_FORMAT
    proc = _cli(out, "--resume")
    assert proc.returncode == 0, proc.stderr[-2000:]
    resumed = json.loads((out / "collective.json").read_text())
    for a, b in zip(clean["tasks"], resumed["tasks"]):
        assert a["widths"] == b["widths"]
        assert a["acc_task_aware"] == pytest.approx(b["acc_task_aware"], abs=1e-6)
        assert [r["loss"] for r in a["epochs"]] == pytest.approx([r["loss"] for r in b["epochs"]], rel=1e-5)
    assert resumed["open_world"]["auroc"] == pytest.approx(clean["open_world"]["auroc"], abs=1e-6)


@pytest.mark.parametrize("nth", [3, 8])
def test_resume_loses_at_most_one_epoch(nth, tmp_path):
    out = tmp_path / "run"
    proc = _cli(out, kill_at=f"batch:{nth}")
    assert proc.returncode == -signal.SIGKILL
    manifest = json.loads((out / "stream.json").read_text())
    epochs, bs = 2, 32  # smoke preset
    seen, killed = 0, None
    for t, exp in enumerate(manifest["experiences"]):
        per_epoch = -(-len(exp["train_indices"]) // bs)
        for e in range(epochs):
            if seen + per_epoch >= nth:
                killed = (t, e)
                break
            seen += per_epoch
        if killed:
            break
    pointer = json.loads((out / "checkpoints" / "latest.json").read_text()) if (
        out / "checkpoints" / "latest.json").exists() else {"task": 0, "epoch": 0}
    # the newest checkpoint is the start of the killed epoch: at most that one epoch is lost
    assert (pointer["task"], pointer["epoch"]) == killed
