from __future__ import annotations

import itertools
import math

import pytest
import torch

from learngene.collective.openset import (
    UnknownReport,
    auroc,
    evaluate_open_set,
    flag_unknown_classes,
    fpr_at_tpr,
    knownness,
    threshold_at_tpr,
)
from learngene.errors import ConfigError, DataError


def test_knownness_methods():
    logits = torch.tensor([[2.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    msp = knownness(logits, "msp")
    torch.testing.assert_close(msp, torch.tensor([math.exp(2) / (math.exp(2) + 2), 1 / 3]))
    torch.testing.assert_close(knownness(logits, "maxlogit"), torch.tensor([2.0, 1.0]))
    torch.testing.assert_close(
        knownness(logits, "energy"), torch.tensor([math.log(math.exp(2) + 2), 1 + math.log(3)])
    )
    t = 2.0
    torch.testing.assert_close(
        knownness(logits, "energy", temperature=t),
        torch.tensor([t * math.log(math.exp(1) + 2), 1 + t * math.log(3)]),
    )
    assert bool((msp[0] > msp[1]).item())  # a confident row looks more "known"


def test_knownness_errors():
    with pytest.raises(ConfigError, match="msp"):
        knownness(torch.zeros(2, 3), "entropy")
    with pytest.raises(DataError, match=r"\[N, n_classes\]"):
        knownness(torch.zeros(3))
    with pytest.raises(ConfigError):
        knownness(torch.zeros(2, 3), "energy", temperature=0.0)


def test_auroc_constructed_cases():
    assert auroc(torch.tensor([3.0, 4.0, 5.0]), torch.tensor([0.0, 1.0])) == 1.0
    assert auroc(torch.tensor([0.0, 1.0]), torch.tensor([3.0, 4.0, 5.0])) == 0.0
    assert auroc(torch.full((4,), 0.7), torch.full((3,), 0.7)) == 0.5
    # pairs: (.9,.5)=1 (.9,.1)=1 (.5,.5)=.5 (.5,.1)=1 twice -> 5 of 6
    assert auroc(torch.tensor([0.9, 0.5, 0.5]), torch.tensor([0.5, 0.1])) == pytest.approx(5 / 6, abs=1e-15)


def test_auroc_matches_brute_force_with_ties():
    g = torch.Generator().manual_seed(0)
    for n, m in [(1, 1), (7, 3), (40, 55)]:
        k = torch.randint(0, 6, (n,), generator=g).float()
        u = torch.randint(0, 5, (m,), generator=g).float()
        brute = sum(
            1.0 if a > b else 0.5 if a == b else 0.0 for a, b in itertools.product(k.tolist(), u.tolist())
        )
        assert auroc(k, u) == pytest.approx(brute / (n * m), abs=1e-12)


def test_auroc_rejects_empty_and_nan():
    with pytest.raises(DataError, match="known"):
        auroc(torch.tensor([]), torch.tensor([1.0]))
    with pytest.raises(DataError, match="unknown"):
        auroc(torch.tensor([1.0]), torch.tensor([]))
    with pytest.raises(DataError, match="NaN"):
        auroc(torch.tensor([float("nan")]), torch.tensor([1.0]))


def test_threshold_and_fpr_at_tpr():
    known = torch.arange(1.0, 21.0)  # 1..20: keeping 95 % = 19 of 20 means threshold 2
    assert threshold_at_tpr(known, 0.95) == 2.0
    assert threshold_at_tpr(known, 1.0) == 1.0
    assert threshold_at_tpr(known, 0.5) == 11.0
    unknown = torch.tensor([0.0, 1.0, 2.0, 3.0, 10.0])
    assert fpr_at_tpr(known, unknown, 0.95) == pytest.approx(3 / 5)  # 2, 3, 10 pass the threshold
    assert fpr_at_tpr(known, torch.tensor([-1.0, 0.5]), 0.95) == 0.0
    with pytest.raises(ConfigError):
        threshold_at_tpr(known, 0.0)
    with pytest.raises(ConfigError):
        threshold_at_tpr(known, 1.5)


def test_evaluate_open_set_report():
    known = torch.tensor([[5.0, 0.0], [0.0, 6.0], [4.0, -1.0]])
    unknown = torch.tensor([[0.1, 0.0], [0.0, 0.2]])
    rep = evaluate_open_set(known, unknown, "msp")
    assert isinstance(rep, UnknownReport)
    assert rep.auroc == 1.0 and rep.fpr95 == 0.0
    assert rep.to_dict() == {"auroc": 1.0, "fpr95": 0.0, "n_known": 3, "n_unknown": 2, "method": "msp"}
    swapped = evaluate_open_set(unknown, known, "maxlogit")
    assert swapped.auroc == 0.0 and swapped.fpr95 == 1.0


def test_flag_unknown_classes():
    scores = {
        "known_cls": torch.tensor([0.9, 0.8, 0.2, 0.95]),  # 1 of 4 below
        "new_cls": torch.tensor([0.1, 0.2, 0.3, 0.9]),  # 3 of 4 below
        "half": torch.tensor([0.1, 0.9]),  # exactly half below
    }
    assert flag_unknown_classes(scores, threshold=0.5) == {"known_cls": False, "new_cls": True, "half": True}
    assert flag_unknown_classes(scores, threshold=0.5, min_fraction=0.75) == {
        "known_cls": False,
        "new_cls": True,
        "half": False,
    }
    with pytest.raises(DataError, match="empty_cls"):
        flag_unknown_classes({"empty_cls": torch.tensor([])}, 0.5)
    with pytest.raises(ConfigError):
        flag_unknown_classes(scores, 0.5, min_fraction=0.0)
