"""Intervals at the level of the randomness, never from too few values, never outside [0, 1] (issue 17)."""

from __future__ import annotations

import math

import pytest

from learngene.stats import MIN_N_CI, clip, format_ci, mean_ci95, nested_ci95
from learngene.tune import _summarize, tie_note, tune_markdown


def test_no_interval_from_fewer_than_three_values():
    assert MIN_N_CI == 3
    for values in ([0.5], [0.25, 0.25], [0.1, 0.9]):
        mean, ci = mean_ci95(values)
        assert mean == pytest.approx(sum(values) / len(values)) and math.isnan(ci)
    assert mean_ci95([0.1, 0.2, 0.3])[1] == pytest.approx(4.303 * 0.1 / 3 ** 0.5)
    assert format_ci(0.25, float("nan"), 2) == "no CI (n = 2 < 3)"


def test_accuracy_intervals_stay_within_0_and_1():
    assert clip(0.98, 0.05) == (pytest.approx(0.93), 1.0) and clip(0.02, 0.05) == (0.0, pytest.approx(0.07))
    assert format_ci(0.98, 0.05) == "[0.930, 1.000]"
    assert format_ci(0.5, 0.05) == "±0.050"
    assert format_ci(-0.98, 0.05, bounded=False) == "±0.050"  # a difference of accuracies may be negative


def test_nested_interval_is_over_the_outer_units():
    # three collective seeds with four tasks each: tasks vary a lot inside a seed, the seed means little
    groups = [[0.2, 0.8, 0.4, 0.6], [0.3, 0.7, 0.5, 0.5], [0.1, 0.9, 0.6, 0.4]]
    nested = nested_ci95(groups)
    assert nested["means"] == pytest.approx([0.5, 0.5, 0.5]) and nested["n"] == 3 and nested["tasks_n"] == 12
    assert nested["ci95"] == pytest.approx(0.0, abs=1e-12) and nested["tasks_ci95"] > 0.1
    # and the other way round: tight tasks within seeds, seeds far apart -> the outer interval is the wide one
    apart = nested_ci95([[0.40, 0.41, 0.39], [0.60, 0.61, 0.59], [0.80, 0.81, 0.79]])
    assert apart["ci95"] == pytest.approx(4.303 * 0.2 / 3 ** 0.5) and apart["ci95"] > 2 * apart["tasks_ci95"]
    assert apart["excludes_0"]
    assert math.isnan(nested_ci95(groups[:2])["ci95"]) and not nested_ci95(groups[:2])["excludes_0"]


def _trial(accs):
    return {"collective": {"accuracies": accs, "pool": "source"}, "memory": {"images": 0}, "train_seconds": 1.0,
            "stream": {k: 0.5 for k in ("average_accuracy", "average_accuracy_class_incremental", "forgetting",
                                        "params", "effective_params")}}


def test_tune_intervals_over_seeds_and_tie_note():
    seeds = [[0.70, 0.74], [0.60, 0.64], [0.80, 0.84]]  # 3 collective seeds: the interval is over their means
    row = _summarize(["train.lr=0.05"], [_trial(a) for a in seeds])
    assert row["ncm"] == pytest.approx(0.72) and row["seeds"] == 3
    assert row["ncm_ci95"] == pytest.approx(4.303 * 0.1 / 3 ** 0.5)
    one = _summarize(["x=1"], [_trial([0.5, 0.6, 0.7])])  # one seed: over its pseudo-tasks (labelled)
    assert one["ncm_ci95"] == pytest.approx(mean_ci95([0.5, 0.6, 0.7])[1])
    best = {"overrides": ["a=1"], "ncm": 0.72, "ncm_ci95": 0.03}
    close = {"overrides": ["a=2"], "ncm": 0.70, "ncm_ci95": 0.03}
    far = {"overrides": ["a=3"], "ncm": 0.60, "ncm_ci95": 0.03}
    assert "tie" in tie_note([best, close], "ncm") and "a=2" in tie_note([best, close], "ncm")
    assert tie_note([best, far], "ncm") is None
    summary = {"setting": "5way1shot", "episodes_per_seed": 3, "seeds": [0], "pool": "source", "score": "s",
               "ci": "c", "chosen": ["a=1"], "tie": tie_note([best, close], "ncm"),
               "rows": [{**r, "average_accuracy": 0.5, "average_accuracy_class_incremental": 0.5, "forgetting": 0.0,
                         "params": 1, "effective_params": 1, "memory_images": 0, "train_seconds": 1}
                        for r in (best, close)]}
    assert "(tie: the chosen score 0.720 lies within the runner-up's interval" in tune_markdown(summary)
