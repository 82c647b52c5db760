import pytest

from learngene.config import list_presets, load_config, parse_setting
from learngene.errors import ConfigError


def test_presets_load_and_validate():
    names = list_presets()
    for required in ("smoke", "default", "omniglot", "cifar100", "paper-cifar100"):
        assert required in names
        cfg = load_config(required)
        assert cfg.preset == required


def test_overrides_are_typed(tmp_path):
    cfg = load_config("smoke", overrides=["train.epochs=7", "individual.before=[4, 8]", "data.source=omniglot"])
    assert cfg.train.epochs == 7 and cfg.individual.before == [4, 8] and cfg.data.source == "omniglot"
    f = tmp_path / "c.toml"
    f.write_text("[train]\nlr = 1\n")
    assert load_config("smoke", f).train.lr == 1.0  # ints accepted where floats are expected


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["train.epochz=3"], "unknown config key 'train.epochz' (did you mean train.epochs?)"),
        (["train.epochs=-1"], "train.epochs = -1 must be > 0"),
        (["train.epochs=1.5"], "must be of type int"),
        (["train.amp=3"], "must be of type bool"),
        (["growth.mode=sideways"], "growth.mode = 'sideways' is not one of"),
        (["stream.test_fraction=1.5"], "stream.test_fraction"),
        (["evaluate.settings=['5wayoneshot']"], "is not of the form"),
        (["nosuch.key=1"], "unknown config key 'nosuch'"),
        (["train=3"], "must be a table"),
        (["data.channels=2"], "must be 1 or 3"),
    ],
)
def test_bad_config_messages(overrides, message):
    with pytest.raises(ConfigError) as info:
        load_config("smoke", overrides=overrides)
    assert message in str(info.value)


def test_unknown_preset_suggests():
    with pytest.raises(ConfigError, match="unknown preset 'smok'.*Did you mean 'smoke'"):
        load_config("smok")


def test_missing_and_malformed_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(path=tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nepochs = ")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path=bad)


def test_parse_setting():
    assert parse_setting("20way5shot") == (20, 5)
    with pytest.raises(ConfigError):
        parse_setting("1way1shot")


@pytest.mark.parametrize("raw", ["nan", "inf", "-inf", "[0.5, nan, 0.2]"])
def test_non_finite_numbers_are_refused_with_the_key(raw, tmp_path):
    from learngene.cli import main

    key = "data.split_fractions" if raw.startswith("[") else "train.lr"
    with pytest.raises(ConfigError, match=f"config key '{key}' = .* is not a finite number"):
        load_config("smoke", overrides=[f"{key}={raw}"])
    out = tmp_path / "o"
    assert main(["collective", "--preset", "smoke", "--set", f"{key}={raw}", "--out", str(out), "--quiet"]) == 2
    assert not out.exists()  # nothing written before the config is valid
