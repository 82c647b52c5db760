"""The summary of an evaluation: paired gains over scratch with their 95% CI, and the NCM gap to joint."""

import pytest

from learngene.config import Config
from learngene.evaluate import paired_difference, summarize
from learngene.report import methods_table
from learngene.stats import mean_ci95


def _runs(accs, seed=0, **extra):
    return [
        {
            "seed": seed,
            "episode": i,
            "accuracy": a,
            "curve": [],
            "curve_epochs": [],
            "train_seconds": 0.0,
            "params": 10,
            "inherited_params": 0,
            **extra,
        }
        for i, a in enumerate(accs)
    ]


SCRATCH = [0.2, 0.9, 0.5, 0.3, 0.7]  # episode difficulty varies a lot...
GAINS = [0.05, 0.07, 0.06, 0.05, 0.07]  # ...the method is always a little better
METHOD = [s + g for s, g in zip(SCRATCH, GAINS)]


def test_paired_difference_pairs_by_episode_and_seed():
    # the reference comes in another order (as after gathering shards): pairing is by (seed, episode)
    d = paired_difference(_runs(METHOD), list(reversed(_runs(SCRATCH))))
    mean, ci = mean_ci95(GAINS)
    assert d["n"] == 5 and d["mean"] == pytest.approx(0.06)
    assert d["ci95"] == pytest.approx(ci)  # the interval of the per-episode differences
    assert d["ci_excludes_0"] is True
    # the unpaired view would see nothing: the difference of means is far inside either mean's CI
    assert abs(sum(METHOD) / 5 - sum(SCRATCH) / 5) < mean_ci95(SCRATCH)[1] / 4
    # a difference that changes sign does not exclude 0; a consistent loss excludes it from below
    assert paired_difference(_runs([0.5, 0.6, 0.5]), _runs([0.6, 0.5, 0.5]))["ci_excludes_0"] is False
    loss = paired_difference(_runs(SCRATCH), _runs(METHOD))
    assert loss["mean"] == pytest.approx(-0.06)
    assert loss["ci_excludes_0"] is True
    # pairs missing on one side are left out; another seed is another pair
    part = paired_difference(_runs(METHOD[:3]) + _runs([0.9], seed=1), _runs(SCRATCH))
    assert part["n"] == 3 and part["mean"] == pytest.approx(sum(GAINS[:3]) / 3)
    assert paired_difference(_runs([0.5]), _runs([0.4]))["ci_excludes_0"] is False  # one pair: no interval


def test_summary_reports_gain_over_scratch_and_gap_to_joint():
    cfg = Config()
    results = {
        "5way1shot": {
            "learngene": _runs(METHOD, start_sha256="ab" * 32),
            "scratch": _runs(SCRATCH),
            "ncm-collective": _runs([0.4, 0.5, 0.4, 0.5, 0.4]),
            "joint": _runs([0.5, 0.7, 0.6, 0.6, 0.5]),
        }
    }
    s = summarize(results, cfg)["settings"]["5way1shot"]
    ms = s["methods"]
    assert "vs_scratch" not in ms["scratch"]
    assert (
        ms["learngene"]["vs_scratch"]["mean"] == pytest.approx(0.06)
        and ms["learngene"]["vs_scratch"]["ci_excludes_0"]
    )
    assert ms["joint"]["vs_scratch"]["n"] == 5
    assert [r["start_sha256"] for r in ms["learngene"]["runs"]] == ["ab" * 32] * 5
    assert [r["accuracy"] for r in ms["scratch"]["runs"]] == SCRATCH
    gap = s["ncm_collective_minus_joint"]
    assert gap["mean"] == pytest.approx(-0.14) and gap["n"] == 5 and gap["ci_excludes_0"]
    table = methods_table(ms)
    row = next(line for line in table.splitlines() if line.startswith("| learngene |"))
    assert "+0.060 ±" in row and " * |" in row  # the star: the paired CI excludes 0
