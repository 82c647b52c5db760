import pytest
import torch

from learngene.config import load_config
from learngene.criterion import CriterionContext, FractionEvidence, list_criteria, select_layers, windows
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


class _ConstantScorer:
    """A validation scorer that cannot tell windows apart (pseudo-tasks too easy: every window scores 1.0)."""

    def __call__(self, layers, inherit=True):
        return 1.0

    def describe(self):
        return "4 pseudo-target 5-way 5-shot tasks"


def test_a_tie_is_warned_about_and_broken_by_the_gradient_statistic(caplog):
    """Issue 19 item 1: all windows scored 1.0 and list order picked ['features.0']; now the paper's statistic
    decides among the tied windows, a warning says the criterion could not, and the record names the tie."""
    stats = torch.tensor([[0.9, 0.8, 0.7, 0.1, 0.2]] * 6)  # layers 3-4 are the low, stable ones
    ctx = _ctx(stats, **{"criterion.name": "'validation'", "criterion.n_layers": 2})
    ctx.score_window = _ConstantScorer()
    with caplog.at_level("WARNING", logger="learngene"):
        res = select_layers(ctx)
    assert res.selected == ["features.3", "features.4"]
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1 and "cannot separate 4 of the 4 candidate windows" in warned[0]
    record = res.to_dict()
    assert record["tie"]["windows"] == ["features.0+features.1", "features.1+features.2", "features.2+features.3",
                                        "features.3+features.4"]
    assert "paper's rule" in record["tie"]["broken_by"] and "4 windows tied at 1" in record["reason"]


def test_a_tie_without_gradient_statistics_prefers_the_larger_then_deeper_window(caplog):
    ctx = _ctx(torch.rand(3, 5), **{"criterion.name": "'validation'"})
    ctx.evidence = FractionEvidence(None, None, 1e-4)  # no gradient statistics recorded
    ctx.score_window = _ConstantScorer()
    with caplog.at_level("WARNING", logger="learngene"):
        res = select_layers(ctx)
    assert res.selected == ["features.1", "features.2", "features.3", "features.4"]  # never the whole network
    assert "larger, then the deeper" in res.tie["broken_by"]


def test_no_warning_when_the_scores_separate_the_windows(caplog):
    ctx = _ctx(torch.rand(3, 5), **{"criterion.name": "'validation'", "criterion.n_layers": 2})

    class Scorer(_ConstantScorer):
        def __call__(self, layers, inherit=True):
            return 0.5 + 0.1 * int(layers[0].split(".")[1]) if inherit else 0.2

    ctx.score_window = Scorer()
    with caplog.at_level("WARNING", logger="learngene"):
        res = select_layers(ctx)
    assert res.selected == ["features.3", "features.4"] and res.tie is None and "tie" not in res.to_dict()
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def test_select_learngene_with_a_recorder_uses_the_papers_rule(caplog):
    """Issue 19 item 1: a recorder given and no criterion= used to run `validation` (minutes, silently)."""
    import torchvision

    import learngene as lg

    data = torchvision.datasets.FakeData(size=160, image_size=(1, 16, 16), num_classes=8,
                                         transform=torchvision.transforms.ToTensor())
    stream = lg.TaskStream.from_dataset(data, n_tasks=2, ways=3, novel_fraction=0.25, seed=0)
    net = lg.create_model("vgg4", in_channels=1, image_size=16, num_classes=3)
    recorder = lg.GradientRecorder()
    trainer = lg.CollectiveTrainer(net, stream, epochs=1, batch_size=32, loss_scope="all",
                                   plugins=[lg.RecorderPlugin(recorder)])
    trainer.fit(progress=False)
    with caplog.at_level("INFO", logger="learngene"):
        gene, record = lg.select_learngene(trainer.network, stream, recorder=recorder)
    assert record["name"] == "gradient_stability" and gene.criterion["name"] == "gradient_stability"
    assert any("criterion 'gradient_stability'" in r.getMessage() for r in caplog.records)
