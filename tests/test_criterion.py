import pytest
import torch

from learngene.config import load_config
from learngene.criterion import CriterionContext, list_criteria, select_layers, windows
from learngene.errors import ConfigError

NAMES = [f"features.{i}" for i in range(5)]


def _ctx(stats, **overrides):
    cfg = load_config("smoke", overrides=[f"{k}={v}" for k, v in overrides.items()])
    return CriterionContext(network=None, layer_names=NAMES, grad_stats=stats, grad_norms=stats * 10, cfg=cfg)


def test_windows():
    assert windows(3, None) == [(0, 1), (0, 2), (1, 2), (1, 3), (2, 3)]  # never the whole network
    assert windows(8, 3) == [(a, a + 3) for a in range(6)]
    with pytest.raises(ConfigError):
        windows(3, 3)


def test_gradient_stability_picks_the_low_and_stable_window():
    # 6 tasks x 5 layers: layers 2-3 have low and constant statistics, the others high or jumpy
    stats = torch.tensor([[0.9, 0.5, 0.1, 0.1, 0.8]] * 6)
    stats[::2, 4] = 0.05  # layer 4 is low on average but unstable across tasks
    res = select_layers(_ctx(stats, **{"criterion.name": "'gradient_stability'", "criterion.n_layers": 2}))
    assert res.selected == ["features.2", "features.3"]
    assert len(res.candidates) == 4 and all("grad_fraction_std_over_tasks" in c for c in res.candidates)
    # the paper's hypothesis holds when the last layers are the stable ones
    stats = torch.tensor([[0.9, 0.8, 0.7, 0.1, 0.1]] * 6)
    res = select_layers(_ctx(stats, **{"criterion.name": "'gradient_stability'", "criterion.n_layers": 2}))
    assert res.selected == ["features.3", "features.4"]


def test_fixed_criterion_checks_layers():
    stats = torch.rand(3, 5)
    ok = select_layers(_ctx(stats, **{"criterion.name": "'fixed'", "criterion.layers": "['features.1','features.2']"}))
    assert ok.selected == ["features.1", "features.2"]
    d = ok.to_dict()  # a user's choice has no score: strict JSON for the gene manifest
    assert d["scores"] == {} and d["candidates"][0]["score"] is None
    with pytest.raises(ConfigError, match="contiguous"):
        select_layers(_ctx(stats, **{"criterion.name": "'fixed'", "criterion.layers": "['features.1','features.3']"}))
    with pytest.raises(ConfigError, match="not conv blocks"):
        select_layers(_ctx(stats, **{"criterion.name": "'fixed'", "criterion.layers": "['head.0']"}))


def test_registry():
    assert {"gradient_stability", "validation", "fixed"} <= set(list_criteria())
