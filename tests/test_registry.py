"""Registries drive the config: a user's own source, model, criterion or evaluation method is accepted by the
config, listed by `learngene list`, and used like a built-in one."""

from __future__ import annotations

import pytest
import torch

from learngene.cli import main
from learngene.config import load_config
from learngene.criterion import CriterionResult, register_criterion
from learngene.data import ImageSet, register_source
from learngene.errors import ConfigError
from learngene.evaluate import register_method
from learngene.models import create_model, register_model
from learngene.registry import CRITERIA, METHODS, MODELS, SOURCES, Registry


@pytest.fixture
def user_entries():
    @register_source("lg_test_noise")
    def noise(root, image_size, channels, seed, **kw):
        g = torch.Generator().manual_seed(seed)
        images = torch.randint(0, 256, (120, 1, image_size, image_size), dtype=torch.uint8, generator=g)
        labels = torch.arange(12).repeat_interleave(10)
        return ImageSet(images, labels, [f"c{i}" for i in range(12)], [f"g{i // 3}" for i in range(12)], "noise")

    def lg_test_net(**kw):
        return create_model("test_vgg", **kw)

    register_model(lg_test_net)

    @register_criterion("lg_test_first")
    def first(ctx):
        return CriterionResult("lg_test_first", ctx.layer_names[:1], [], "always the first block")

    register_method("lg-test-ncm", "NCM on the collective network, registered by a user",
                    features=lambda ctx: (lambda x: ctx.network.forward_penultimate(x), 1))

    def same_gene_again(ctx, ways, seed):
        from learngene.evaluate import Trained
        from learngene.individual import build_individual

        return Trained(build_individual(ctx.gene, ctx.cfg.individual, ways, seed=seed), ctx.cfg.individual)

    register_method("lg-test-gene", "the learngene again, registered by a user", build=same_gene_again,
                    gene=lambda ctx: ctx.gene)
    yield
    METHODS.unregister("lg-test-gene")
    SOURCES.unregister("lg_test_noise")
    MODELS.unregister("lg_test_net")
    CRITERIA.unregister("lg_test_first")
    METHODS.unregister("lg-test-ncm")


def test_registered_names_are_accepted_by_the_config_and_listed(user_entries, capsys):
    cfg = load_config("smoke", overrides=["data.source='lg_test_noise'", "model.name='lg_test_net'",
                                          "criterion.name='lg_test_first'", "evaluate.methods=['lg-test-ncm']"])
    assert (cfg.data.source, cfg.model.name, cfg.criterion.name) == ("lg_test_noise", "lg_test_net", "lg_test_first")
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("lg_test_noise", "lg_test_net", "lg_test_first", "lg-test-ncm", "registered by a user"):
        assert name in out


def test_unregistered_names_are_refused_with_suggestions(tmp_path, capsys):
    from learngene.run import check_names

    with pytest.raises(ConfigError, match=r"config key data.source = 'glyph' is not a registered data source. "
                                          r"Did you mean 'glyphs'"):
        check_names(load_config("smoke", overrides=["data.source='glyph'"]))
    with pytest.raises(ConfigError, match="config key evaluate.methods = 'learngen' is not a registered evaluation"):
        check_names(load_config("smoke", overrides=["evaluate.methods=['learngen']"]))
    # the command line checks them as it loads the config: refused before anything is written
    assert main(["collective", "--preset", "smoke", "--set", "criterion.name='gradient_stabilty'", "--out",
                 str(tmp_path / "o")]) == 2
    assert "Did you mean 'gradient_stability'" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_a_user_registered_run_end_to_end(user_entries, tmp_path):
    """Source, model, criterion and method of the user drive a whole `learngene run`."""
    out = tmp_path / "run"
    args = ["run", "--preset", "smoke", "--out", str(out), "--quiet", "--set", "data.source='lg_test_noise'",
            "--set", "model.name='lg_test_net'", "--set", "criterion.name='lg_test_first'",
            "--set", "evaluate.methods=['learngene', 'lg-test-ncm', 'lg-test-gene']", "--set", "data.split='classes'",
            "--set", "stream.tasks=2", "--set", "stream.ways=3", "--set", "evaluate.settings=['3way1shot']",
            "--set", "evaluate.headline='3way1shot'", "--set", "evaluate.queries=2"]
    assert main(args) == 0
    import json

    report = json.loads((out / "report.json").read_text())
    assert report["criterion"]["name"] == "lg_test_first" and report["data"] == "noise"
    methods = report["individual"]["methods"]
    assert set(methods) == {"learngene", "lg-test-ncm", "lg-test-gene"}
    assert methods["lg-test-gene"]["same_as"] == "learngene"  # the same gene: recognised, not trained twice
    assert {r["start_sha256"] for r in methods["lg-test-gene"]["runs"]} == {
        r["start_sha256"] for r in methods["learngene"]["runs"]}


def test_registry_refuses_shadowing_and_a_nameless_entry():
    reg: Registry = Registry("thing")
    reg.register("a", 1)
    reg.register("a", 1)  # the same object again: harmless
    with pytest.raises(ConfigError, match="already registered"):
        reg.register("a", 2)
    with pytest.raises(ConfigError, match="non-empty string name"):
        reg.register("", 3)
    assert reg.names() == ["a"] and reg.in_order() == ["a"] and "a" in reg


def test_a_user_name_clashing_with_a_lazily_loaded_builtin_is_refused_at_registration():
    from learngene.errors import ModelError

    def vit_test(**kw):  # the name of a built-in transformer preset
        return create_model("test_vgg", **kw)

    with pytest.raises(ModelError, match="'vit_test' is already registered"):
        register_model(vit_test)
    assert create_model("vgg4", num_classes=3) is not None  # and the registry still works
