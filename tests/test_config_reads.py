"""One config for both paradigms: shared sections, paradigm defaults, and every key the chosen paradigm (or
command) never reads refused -- from a file, a --set override or Python alike."""

from __future__ import annotations

import pytest

from learngene.config import (
    Config,
    IndividualConfig,
    TrainConfig,
    apply_overrides,
    config_for,
    config_from_dict,
    load_config,
)
from learngene.errors import ConfigError


def test_the_section_classes_check_their_values_in_python_too():
    with pytest.raises(ConfigError, match="individual.inherit_mode = 'frozen ' is not one of ewc, freeze"):
        IndividualConfig(inherit_mode="frozen ")
    with pytest.raises(ConfigError, match="individual.epochs = -1 must be >= 0"):
        IndividualConfig(epochs=-1)
    settings = IndividualConfig()
    with pytest.raises(ConfigError, match="individual.lr = 0.0 must be > 0"):
        settings.lr = 0  # assignment is checked like construction
    with pytest.raises(ConfigError, match="'train.lr' must be of type float"):
        TrainConfig(lr="fast")
    assert IndividualConfig(epochs=3, lr=1).lr == 1.0  # an int where a float is expected is fine


def test_a_paradigm_brings_its_defaults_for_the_shared_keys():
    vit, cnn = config_for("vit"), config_for("cnn")
    assert (vit.train.lr, vit.train.weight_decay, vit.train.batch_size) == (1e-3, 0.05, 128)
    assert (cnn.train.lr, cnn.train.weight_decay, cnn.train.batch_size) == (0.05, 5e-4, 64)
    assert vit.criterion.name == "gradient_stability" and vit.evaluate.seeds == [0, 1, 2]
    assert Config(paradigm="vit").train.lr == 1e-3
    # a value set on purpose survives a change of paradigm; the defaults follow it
    cfg = Config(train=TrainConfig(batch_size=16))
    cfg.paradigm = "vit"
    assert cfg.train.batch_size == 16 and cfg.train.lr == 1e-3 and cfg.model.name == "vit_p8_d96_l8"


def test_shared_keys_are_used_by_the_transformer_path():
    cfg = load_config("vit-smoke", overrides=["train.lr=0.5", "individual.epochs=7", "evaluate.seeds=[4]"])
    from learngene.vit.train import Recipe

    recipe = Recipe.from_config(cfg, device=None)
    assert recipe.lr == recipe.child_lr == 0.5 and cfg.individual.epochs == 7


@pytest.mark.parametrize("key, value, reads", [
    ("train.epochs", "7", "the transformer paradigm"),
    ("train.momentum", "0.5", "the transformer paradigm"),
    ("individual.before", "[8]", "the transformer paradigm"),
    ("evaluate.headline", "'5way5shot'", "the transformer paradigm"),
    ("stream.tasks", "4", "the transformer paradigm"),
])
def test_a_key_the_transformer_path_never_reads_is_refused(key, value, reads):
    with pytest.raises(ConfigError, match=f"config key {key}( = .*)? is not read by {reads}.*, which reads .*; remove {key}"):
        load_config("vit-smoke", overrides=[f"{key}={value}"])


def test_a_transformer_key_is_refused_by_the_cnn_paradigm_from_a_file_or_from_python(tmp_path):
    with pytest.raises(ConfigError, match=r"vit.depths( = .*)? is not read by the CNN paradigm \(paradigm = 'cnn'\).*remove vit.depths \(it "
                                          r"applies to the transformer paradigm"):
        load_config("smoke", overrides=["vit.depths=[2]"])
    toml = tmp_path / "c.toml"
    toml.write_text("[vit]\naux_epochs = 30\n")  # given, though equal to its default: still refused
    with pytest.raises(ConfigError, match="vit.aux_epochs is not read by the CNN paradigm"):
        load_config("smoke", toml)
    cfg = load_config("smoke")
    cfg.vit.aux_epochs = 3  # set in Python: refused once the config is validated (as every run does)
    with pytest.raises(ConfigError, match="vit.aux_epochs = 3 is not read by the CNN paradigm"):
        cfg.validate()
    with pytest.raises(ConfigError, match="individual.lr = None .* is for transformer descendants only"):
        Config(individual=IndividualConfig(lr=None)).validate()


def test_inherit_reads_its_own_keys_only():
    vit = config_for("vit")
    # a transformer descendant trains by the individual recipe at vit.fewshot_lr
    assert apply_overrides(vit, ["individual.head_epochs=3", "vit.fewshot_lr=0.03"], reader="inherit:vit")
    with pytest.raises(ConfigError, match="train.epochs is not read by `learngene inherit` from a transformer "
                                          "learngene, which reads individual.classifier"):
        apply_overrides(config_for("vit"), ["train.epochs=3"], reader="inherit:vit")
    for unread in ("vit.descendant_epochs=3", "individual.lr=0.1", "train.lr=0.01"):  # the full-data recipe's
        with pytest.raises(ConfigError, match="is not read by `learngene inherit`"):
            apply_overrides(config_for("vit"), [unread], reader="inherit:vit")
    with pytest.raises(ConfigError, match="train.epochs is not read by `learngene inherit` from a CNN learngene"):
        apply_overrides(config_for("cnn"), ["train.epochs=3"], reader="inherit:cnn")


def test_a_recorded_config_of_an_earlier_release_still_loads():
    old_vit = {"paradigm": "vit", "vit": {"lr": 0.002, "seeds": [0, 1], "heur_blocks": 2, "methods": ["tleg"],
                                          "ancestry": "vit_test", "depths": [2]}}
    cfg = config_from_dict(old_vit)
    assert (cfg.train.lr, cfg.evaluate.seeds, cfg.criterion.n_layers, cfg.evaluate.methods, cfg.model.name) == (
        0.002, [0, 1], 2, ["tleg"], "vit_test")
    old_cnn = {"paradigm": "cnn", "train": {"lr": 0.03}, "vit": {"lr": 0.001, "seeds": [0, 1, 2]}}
    assert config_from_dict(old_cnn).train.lr == 0.03  # a CNN run's unread [vit] defaults are dropped
