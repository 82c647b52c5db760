import pytest
import torch

from learngene.config import IndividualConfig
from learngene.errors import ModelError
from learngene.gene import Learngene
from learngene.individual import (
    IndividualModel,
    build_individual,
    plan_individual,
    train_few_shot,
)
from learngene.models import create_model

SPEC = {"image_size": 16, "channels": 1, "mean": [0.5], "std": [0.25]}


@pytest.fixture
def network():
    torch.manual_seed(0)
    net = create_model("test_vgg", in_channels=1, image_size=16, num_classes=5)
    net.train()
    with torch.no_grad():  # non-trivial BN statistics
        for _ in range(3):
            net(torch.randn(8, 1, 16, 16))
    return net.eval()


def _task(n_per_class=2, ways=3, seed=0, draw=0):
    """Images around ``ways`` prototypes fixed by ``seed``; ``draw`` picks independent noise (held out)."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.randn(ways, 1, 16, 16, generator=g) * 2
    noise = torch.Generator().manual_seed(1000 * seed + draw + 1)
    x = protos.repeat_interleave(n_per_class, 0)
    x = x + 0.3 * torch.randn(ways * n_per_class, 1, 16, 16, generator=noise)
    y = torch.arange(ways).repeat_interleave(n_per_class)
    return x, y


def test_builder_shapes_and_inherited_weights(network):
    gene = Learngene.from_model(network, ["features.1", "features.2"], input_spec=SPEC)
    model = build_individual(gene, IndividualConfig(before=[5]), num_classes=3)
    assert isinstance(model, IndividualModel)
    assert model.eval()(torch.randn(2, 1, 16, 16)).shape == (2, 3)
    # the fresh layer before the gene was adapted to the gene's input channels, and pools match the source
    assert model.before[0].conv.out_channels == gene.in_channels
    src = network.state_dict()
    for k, v in model.gene.state_dict().items():
        i, rest = k.split(".", 1)
        assert torch.equal(v, src[f"features.{int(i) + 1}.{rest}"])
    assert model.inherited_params() == gene.num_params


def test_builder_refuses_mismatch(network):
    gene = Learngene.from_model(network, ["features.1"], input_spec=SPEC)
    with pytest.raises(ModelError, match="needs at least one fresh layer"):
        plan_individual(gene.layers, gene.input_spec, IndividualConfig(before=[]), 3)
    with pytest.raises(ModelError, match="expects 4"):
        plan_individual(gene.layers, gene.input_spec, IndividualConfig(before=[7], adapt=False), 3)


def test_gene_at_input_needs_no_fresh_layer(network):
    gene = Learngene.from_model(network, ["features.0"], input_spec=SPEC)
    cfg = plan_individual(gene.layers, gene.input_spec, IndividualConfig(before=[32]), 3)
    assert cfg["before"] == []


def test_every_task_starts_from_a_fresh_gene(network):
    gene = Learngene.from_model(network, ["features.1", "features.2"], input_spec=SPEC)
    before = {k: v.clone() for k, v in gene.state_dict_for("").items()}
    x, y = _task()
    m1 = build_individual(gene, IndividualConfig(before=[4]), 3)
    train_few_shot(m1, x, y, IndividualConfig(epochs=5, inherit_mode="free", lr=0.1), seed=0)
    assert any(not torch.equal(v, before[k]) for k, v in m1.gene.state_dict().items())  # it did train
    m2 = build_individual(gene, IndividualConfig(before=[4]), 3)
    for k, v in m2.gene.state_dict().items():
        assert torch.equal(v, before[k])


def _drift(model, gene):
    ref = gene.state_dict_for("")
    return sum(float((p.detach() - ref[n]).pow(2).sum()) for n, p in model.gene.named_parameters())


def test_ewc_keeps_inherited_layers_close(network):
    gene = Learngene.from_model(network, ["features.1", "features.2"], input_spec=SPEC)
    x, y = _task(n_per_class=4)
    drifts = {}
    for lam in (0.0, 100.0):
        model = build_individual(gene, IndividualConfig(before=[4]), 3, seed=1)
        out = train_few_shot(model, x, y, IndividualConfig(epochs=20, lr=0.01, ewc_lambda=lam, imprint=False), seed=1)
        drifts[lam] = _drift(model, gene)
        if lam:
            assert out["ewc_penalty_final"] > 0
    assert drifts[100.0] < 0.5 * drifts[0.0]


def test_freeze_mode_keeps_gene_exact(network):
    gene = Learngene.from_model(network, ["features.1"], input_spec=SPEC)
    x, y = _task()
    model = build_individual(gene, IndividualConfig(before=[4]), 3)
    train_few_shot(model, x, y, IndividualConfig(epochs=5, inherit_mode="freeze", lr=0.1), seed=0)
    assert _drift(model, gene) == 0.0


def test_training_learns_separable_task(network):
    """Accuracy on held-out queries (same classes, other images), never on the support set it trained on."""
    gene = Learngene.from_model(network, ["features.1"], input_spec=SPEC)
    x, y = _task(n_per_class=3)
    qx, qy = _task(n_per_class=10, draw=1)
    assert not any(torch.equal(q, s) for q in qx for s in x)  # held out
    # the images differ by a spatial pattern only: the flattened map keeps it (average pooling would not), and
    # no imprinting: the accuracy must come from training (an imprinted head alone separates this task)
    settings = IndividualConfig(before=[4], epochs=15, lr=0.05, imprint=False, pool="flatten", augment="none")
    model = build_individual(gene, settings, 3)
    out = train_few_shot(model, x, y, settings, query_x=qx, query_y=qy, seed=0)
    assert len(out["curve"]) == 15
    assert out["accuracy"] > 0.6


def test_building_and_training_leave_the_callers_global_rng_alone(network):
    gene = Learngene.from_model(network, ["features.1"], input_spec=SPEC)
    torch.manual_seed(5)
    before = torch.get_rng_state()
    model = build_individual(gene, IndividualConfig(before=[4]), 3, seed=1)
    x, y = _task()
    train_few_shot(model, x, y, IndividualConfig(epochs=2, inherit_mode="free"), seed=1)
    assert torch.equal(torch.get_rng_state(), before)


def _bn_buffers(model):
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k}


def test_head_stage_keeps_the_gene_exact_and_trains_the_rest(network):
    """The first stage (head_epochs) is a linear probe of the gene: inherited weights and BatchNorm statistics
    stay bit-identical while the fresh layers and the head learn."""
    gene = Learngene.from_model(network, ["features.1"], input_spec=SPEC)
    x, y = _task()
    settings = IndividualConfig(before=[4], head_epochs=4, epochs=0, lr=0.1, bn="train")
    model = build_individual(gene, settings, 3)
    fresh = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("gene.")}
    train_few_shot(model, x, y, settings, seed=0)
    assert _drift(model, gene) == 0.0
    state = model.state_dict()
    assert torch.equal(state["gene.0.bn.running_mean"], gene.tensors["features.1.bn.running_mean"])
    assert not torch.equal(state["before.0.conv.weight"], fresh["before.0.conv.weight"])
    assert not torch.equal(state["classifier.weight"], fresh["classifier.weight"])
    # every parameter is trainable again afterwards (the freeze is the stage's, not the model's)
    assert all(p.requires_grad for p in model.parameters())
    # then the main stage moves the gene
    train_few_shot(model, x, y, IndividualConfig(before=[4], epochs=3, lr=0.1, inherit_mode="free"), seed=0)
    assert _drift(model, gene) > 0.0


def test_frozen_batchnorm_keeps_the_genes_statistics(network):
    gene = Learngene.from_model(network, ["features.1"], input_spec=SPEC)
    x, y = _task()
    kept = IndividualConfig(before=[4], epochs=3, lr=0.05, bn="frozen")
    model = build_individual(gene, kept, 3)
    before_stats = _bn_buffers(model)
    train_few_shot(model, x, y, kept, seed=0)
    after = _bn_buffers(model)
    assert all(torch.equal(after[k], before_stats[k]) for k in after if k.startswith("gene."))
    assert any(not torch.equal(after[k], before_stats[k]) for k in after if k.startswith("before."))
    moved = IndividualConfig(before=[4], epochs=3, lr=0.05, bn="train")
    model = build_individual(gene, moved, 3)
    train_few_shot(model, x, y, moved, seed=0)
    after = _bn_buffers(model)
    assert any(not torch.equal(after[k], before_stats[k]) for k in after if k.startswith("gene."))


def test_untrained_individual_model_is_cosine_ncm_on_the_gene(network):
    """With an imprinted cosine head and average pooling, the individual model before any training classifies
    exactly as the ncm-gene baseline does: training starts from what the gene knows."""
    from learngene.baselines import block_features, ncm_accuracy

    gene = Learngene.from_model(network, ["features.0", "features.1"], input_spec=SPEC)
    x, y = _task(n_per_class=2)
    qx, qy = _task(n_per_class=6, draw=2)
    settings = IndividualConfig(before=[], epochs=0, pool="avg", classifier="cosine")
    model = build_individual(gene, settings, 3)
    out = train_few_shot(model, x, y, settings, query_x=qx, query_y=qy, seed=0)
    ncm = ncm_accuracy(block_features(network, "features.1", pool="avg"), x, y, qx, qy)
    assert out["accuracy"] == ncm
    with torch.no_grad():
        logits = model(qx)
    feats = block_features(network, "features.1", pool="avg")(qx)
    protos = torch.stack([block_features(network, "features.1", pool="avg")(x)[y == c].mean(0) for c in range(3)])
    cos = torch.nn.functional.normalize(feats, dim=1) @ torch.nn.functional.normalize(protos, dim=1).t()
    assert torch.allclose(logits, model.classifier.scale * cos, atol=1e-5)


def test_scratch_models_are_not_treated_as_inherited(network):
    """inherited=() (scratch): no head stage, no frozen BatchNorm; the whole budget trains every layer."""
    gene = Learngene.from_model(network, ["features.1"], input_spec=SPEC)
    x, y = _task()
    settings = IndividualConfig(before=[4], head_epochs=2, epochs=2, lr=0.1, bn="frozen")
    model = build_individual(gene, settings, 3, inherit=False)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    out = train_few_shot(model, x, y, settings, seed=0, use_gene_ewc=False, inherited=(), query_x=x, query_y=y)
    assert out["curve_epochs"] == [1, 2, 3, 4]
    state = model.state_dict()
    assert not torch.equal(state["gene.0.conv.weight"], start["gene.0.conv.weight"])
    assert not torch.equal(state["gene.0.bn.running_mean"], start["gene.0.bn.running_mean"])


def test_augmentation_draws_from_the_seed_and_fills_with_background(network):
    from learngene.individual import _augmenter

    aug = _augmenter("affine")
    x = torch.full((2, 1, 16, 16), -1.0)
    x[:, :, 6:10, 6:10] = 2.0
    a = aug(x, torch.Generator().manual_seed(0))
    b = aug(x, torch.Generator().manual_seed(0))
    c = aug(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert float(a[:, :, 0, 0].max()) == pytest.approx(-1.0)  # corners come in as background, not 0
    assert _augmenter("none") is None
