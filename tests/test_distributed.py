"""Two CPU processes with gloo under torchrun: DDP collective training and sharded evaluation."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

COMMON = ["--preset", "smoke", "--quiet", "--set", "growth.trigger='always'", "--set", "stream.tasks=2"]


def _env():
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS="1")
    env.pop("LEARNGENE_KILL_AT", None)
    return env


def _learngene(*args, nproc=1):
    if nproc == 1:
        cmd = [sys.executable, "-m", "learngene", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "learngene", *args]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _strip(obj):
    """Drop wall-clock fields: everything else must be identical."""
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if "seconds" not in k}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    _learngene("collective", *COMMON, "--device", "cpu", "--out", str(root / "single"))
    _learngene("collective", *COMMON, "--device", "cpu", "--out", str(root / "ddp"), nproc=2)
    return root


def test_ddp_collective_matches_single_process(runs):
    single = json.loads((runs / "single" / "collective.json").read_text())
    ddp = json.loads((runs / "ddp" / "collective.json").read_text())
    assert ddp["machine"]["world_size"] == 2 and single["machine"]["world_size"] == 1
    # growth is applied identically on every rank: same widths and parameter counts as one process
    assert [t["widths"] for t in ddp["tasks"]] == [t["widths"] for t in single["tasks"]]
    assert [t["params"] for t in ddp["tasks"]] == [t["params"] for t in single["tasks"]]
    # the same global batch, split over ranks: the training differs only by per-rank BatchNorm statistics
    assert ddp["final"]["average_accuracy"] == pytest.approx(single["final"]["average_accuracy"], abs=0.25)
    assert ddp["tasks"][0]["epochs"][0]["loss"] == pytest.approx(single["tasks"][0]["epochs"][0]["loss"], rel=0.1)
    # rank 0 alone wrote a checkpoint that resumes with any number of processes
    assert (runs / "ddp" / "checkpoints" / "latest.json").is_file()


def test_sharded_evaluation_equals_single_process(runs, tmp_path):
    _learngene("select", "--run", str(runs / "single"), "--out", str(tmp_path / "gene"))
    args = ["evaluate", "--run-dir", str(runs / "single"), "--gene", str(tmp_path / "gene"), "--quiet",
            "--set", "evaluate.episodes=4"]
    _learngene(*args, "--out", str(tmp_path / "one"))
    _learngene(*args, "--out", str(tmp_path / "two"), nproc=2)
    one = json.loads((tmp_path / "one" / "evaluation.json").read_text())
    two = json.loads((tmp_path / "two" / "evaluation.json").read_text())
    assert _strip(one) == _strip(two)
    assert one["methods"]["learngene"]["n"] == 4
