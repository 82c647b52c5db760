from __future__ import annotations

import json
import math

import pytest
import torch

from learngene.collective.metrics import AccuracyMatrix, accuracy
from learngene.errors import DataError

R = [[0.9, None, None], [0.95, 0.8, None], [0.6, 0.5, 0.85]]


def filled() -> AccuracyMatrix:
    m = AccuracyMatrix(3)
    for i, row in enumerate(R):
        for j, v in enumerate(row):
            if v is not None:
                m.set(i, j, v)
    return m


def test_hand_computed_3x3():
    m = filled()
    assert m.average_accuracy(0) == pytest.approx(0.9)
    assert m.average_accuracy(1) == pytest.approx((0.95 + 0.8) / 2)
    assert m.average_accuracy(2) == pytest.approx((0.6 + 0.5 + 0.85) / 3)
    assert m.average_accuracy() == m.average_accuracy(2)
    # forgetting: best earlier accuracy minus current, averaged over old tasks
    assert m.forgetting(0) == 0.0
    assert m.forgetting(1) == pytest.approx(0.9 - 0.95)  # improved: negative forgetting
    assert m.forgetting(2) == pytest.approx(((0.95 - 0.6) + (0.8 - 0.5)) / 2)
    # backward transfer: current minus right-after-learning
    assert m.backward_transfer(0) == 0.0
    assert m.backward_transfer(1) == pytest.approx(0.05)
    assert m.backward_transfer(2) == pytest.approx(((0.6 - 0.9) + (0.5 - 0.8)) / 2)
    # forgetting and -BWT differ exactly when an old task peaked after it was learned
    assert m.forgetting(2) != pytest.approx(-m.backward_transfer(2))


def test_rows_nan_above_diagonal_and_last_row():
    m = AccuracyMatrix(3)
    m.set(0, 0, 0.5)
    m.set(1, 0, 0.4)
    assert m.last_row() == 0  # row 1 incomplete
    assert m.average_accuracy() == 0.5
    r = m.row(1)
    assert r[0] == 0.4 and math.isnan(r[1]) and math.isnan(r[2])
    with pytest.raises(DataError, match=r"set\(1, 1"):
        m.average_accuracy(1)
    with pytest.raises(DataError, match="j <= i"):
        m.set(0, 1, 0.3)
    with pytest.raises(DataError):
        m.set(0, 0, float("nan"))
    with pytest.raises(DataError, match="no complete row"):
        AccuracyMatrix(2).average_accuracy()


def test_dict_round_trip_is_json_friendly():
    m = filled()
    d = json.loads(json.dumps(m.to_dict()))
    back = AccuracyMatrix.from_dict(d)
    assert back.to_dict() == m.to_dict()
    assert back.forgetting() == m.forgetting()
    with pytest.raises(DataError, match="malformed"):
        AccuracyMatrix.from_dict({"n_tasks": 2, "R": [[1.0]]})


def test_accuracy():
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [5.0, 1.0], [0.0, 1.0]])
    assert accuracy(logits, torch.tensor([0, 1, 1, 1])) == 0.75
    with pytest.raises(DataError):
        accuracy(logits, torch.tensor([0, 1]))
    with pytest.raises(DataError, match="empty"):
        accuracy(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long))
