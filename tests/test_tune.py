"""`learngene tune`: a grid of settings scored on source-class pseudo-tasks, resumable, never on novel classes."""

import json

import pytest

from learngene.cli import main
from learngene.config import load_config
from learngene.errors import ConfigError
from learngene.tune import grid, parse_param, tune


def test_parse_param_keeps_lists_whole():
    assert parse_param("train.ewc_lambda=10,20,40") == ("train.ewc_lambda", ["10", "20", "40"])
    assert parse_param("individual.before=[8,8],[16]") == ("individual.before", ["[8,8]", "[16]"])
    with pytest.raises(ConfigError, match="section.key"):
        parse_param("train.ewc_lambda")
    with pytest.raises(ConfigError, match="twice"):
        grid([("a.b", ["1"]), ("a.b", ["2"])])


def test_grid_is_the_product():
    combos = grid([("train.ewc_lambda", ["0", "40"]), ("train.epochs", ["1", "2", "3"])])
    assert len(combos) == 6 and combos[0] == ["train.ewc_lambda=0", "train.epochs=1"]


def test_bad_value_fails_before_training(tmp_path):
    base = load_config("smoke")
    with pytest.raises(ConfigError, match="train.epochs"):
        tune(base, [parse_param("train.epochs=1,-2")], tmp_path / "t", progress=False)
    assert not (tmp_path / "t").exists()


def test_tune_scores_on_pseudo_tasks_and_resumes(tmp_path, monkeypatch):
    base = load_config("smoke", overrides=["stream.tasks=2", "train.epochs=1"])
    out = tmp_path / "t"
    summary = tune(base, [parse_param("train.ewc_lambda=0,40")], out, setting="3way1shot", episodes=3,
                   progress=False)
    assert len(summary["rows"]) == 2
    assert summary["chosen"] == summary["rows"][0]["overrides"]
    assert summary["rows"][0]["ncm"] >= summary["rows"][1]["ncm"]
    assert summary["pool"].startswith("source")  # never the novel classes
    assert all(0.0 <= r["ncm"] <= 1.0 and r["n"] == 3 for r in summary["rows"])
    assert "train.ewc_lambda=40" in (out / "tune.md").read_text()
    assert len(list((out / "trials").glob("*.json"))) == 2

    import learngene.tune as t

    def boom(*a, **k):
        raise AssertionError("a finished trial was trained again")

    monkeypatch.setattr(t, "run_trial", boom)
    again = tune(base, [parse_param("train.ewc_lambda=0,40")], out, setting="3way1shot", episodes=3, progress=False,
                 resume=True)
    assert again["rows"] == json.loads(json.dumps(summary["rows"]))


def test_pseudo_pool_excludes_novel_classes():
    from learngene.prepare import load_data, make_split, make_stream
    from learngene.run import pseudo_pool

    cfg = load_config("smoke")
    data = load_data(cfg)
    split = make_split(cfg, data)
    stream = make_stream(cfg, data, split)
    pool, _ = pseudo_pool(stream)
    assert not set(pool) & set(split.novel)
    assert not set(pool) & set(stream.class_order)


def test_tune_cli(tmp_path, capsys):
    rc = main(["tune", "--preset", "smoke", "--set", "stream.tasks=2", "--set", "train.epochs=1",
               "--param", "train.lr=0.05", "--setting", "3way1shot", "--episodes", "2", "--out",
               str(tmp_path / "t"), "--quiet"])
    assert rc == 0
    assert "train.lr=0.05" in capsys.readouterr().out


def test_tune_with_joint_reports_the_gap(tmp_path):
    base = load_config("smoke", overrides=["stream.tasks=2", "train.epochs=1"])
    summary = tune(base, [parse_param("train.lr=0.05")], tmp_path / "t", setting="3way1shot", episodes=3,
                   joint=True, progress=False)
    (row,) = summary["rows"]
    assert row["gap_to_joint"] == pytest.approx(row["ncm"] - row["joint_ncm"], abs=1e-9)
    assert "gap to joint" in (tmp_path / "t" / "tune.md").read_text()


def test_tune_individual_settings_share_one_collective_run(tmp_path, monkeypatch):
    import learngene.tune as t

    base = load_config("smoke", overrides=["stream.tasks=2", "train.epochs=1", "individual.epochs=2"])
    calls = []
    real = t.run_collective

    def counting(*a, **k):
        calls.append(a[1])
        return real(*a, **k)

    monkeypatch.setattr(t, "run_collective", counting)
    summary = tune(base, [parse_param("individual.lr=0.01,0.05")], tmp_path / "t", setting="3way1shot",
                   episodes=2, score="individual", progress=False)
    assert len(calls) == 1  # the collective model does not depend on individual.* settings
    assert summary["ranked_by"] == "individual"
    assert all(0.0 <= r["individual"] <= 1.0 and r["gene"] for r in summary["rows"])
    assert summary["rows"][0]["individual"] >= summary["rows"][1]["individual"]
    assert "learngene 3way1shot" in (tmp_path / "t" / "tune.md").read_text()


def test_tune_refuses_a_non_empty_out_like_every_command(tmp_path, capsys):
    """Issue 19 item 4: a second tune into the same --out replaced tune.md and trials/001-seed0.json silently."""
    out = tmp_path / "t"
    args = ["tune", "--preset", "smoke", "--set", "stream.tasks=2", "--set", "train.epochs=1", "--setting",
            "3way1shot", "--episodes", "2", "--out", str(out), "--quiet"]
    assert main([*args, "--param", "train.epochs=1,2"]) == 0
    before = {p.name: p.read_bytes() for p in (out / "trials").iterdir()}
    md = (out / "tune.md").read_bytes()
    capsys.readouterr()
    assert main([*args, "--param", "train.epochs=1,3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not empty" in err[0] and "--overwrite" in err[0] and "--resume" in err[0], err
    assert {p.name: p.read_bytes() for p in (out / "trials").iterdir()} == before  # nothing was touched
    assert (out / "tune.md").read_bytes() == md
    # --overwrite starts afresh: the earlier trials are gone, not mixed with the new ones
    assert main([*args, "--param", "train.epochs=1,3", "--overwrite"]) == 0
    assert "train.epochs=3" in (out / "tune.md").read_text() and "train.epochs=2" not in (out / "tune.md").read_text()
    assert main(["tune", "--preset", "smoke", "--param", "train.epochs=1", "--out", str(tmp_path / "new"),
                 "--resume"]) == 2
    assert "--resume given but" in capsys.readouterr().err
