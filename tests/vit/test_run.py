"""The whole transformer path on the vit-smoke preset, its caches, its refusals, and inherit for transformer genes."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from learngene.artifacts import INDIVIDUAL
from learngene.config import load_config
from learngene.errors import ConfigError, DataError
from learngene.kinds import inherit, load_gene
from learngene.models.io import load_network
from learngene.run import check_names
from learngene.vit.run import run_vit

METHODS = ["scratch", "heur-lg", "truncated", "tleg", "weight-selection", "frequency"]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """One vit-smoke run shared by the tests of this module: (config, out dir, report)."""
    from learngene.cli import main

    cfg = load_config("vit-smoke")
    out = tmp_path_factory.mktemp("vit-smoke") / "run"
    torch_state = torch.get_rng_state()
    assert main(["run", "--preset", "vit-smoke", "--out", str(out), "--quiet", "--device", "cpu"]) == 0
    assert torch.equal(torch.get_rng_state(), torch_state)  # the run leaves the caller's RNG alone
    return cfg, out, json.loads((out / "report.json").read_text())


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def test_smoke_report_rows_are_well_formed(smoke):
    cfg, out, report = smoke
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk == report
    rows = on_disk["descendants"]["rows"]
    anc_depth = on_disk["ancestry"]["depth"]
    assert anc_depth == 3 and cfg.vit.depths == [2, 3, 4]
    assert cfg.vit.learngene_seeds == [0, 1] and cfg.vit.budget_epochs == [3] and cfg.vit.descendant_epochs == 3
    expected = {(m, d, w, cfg.vit.scratch_epochs if m == "scratch" else 3) for w in cfg.vit.widths
                for d in cfg.vit.depths for m in METHODS if not (m == "truncated" and (d > anc_depth or w != 32))}
    # the equal-budget run: scheduled for 3 epochs
    expected |= {("scratch", d, w, 3) for w in cfg.vit.widths for d in cfg.vit.depths}
    assert {(r["method"], r["depth"], r["width"], r["epochs"]) for r in rows} == expected
    assert {"method": "truncated", "depth": 4, "width": 32,
            "reason": "deeper than the 3-block ancestry: truncation only shortens"} in on_disk["descendants"]["skipped"]
    genes = {k: load_gene(out / "genes" / k) for k in ("tleg", "heur-lg", "frequency")}
    anc_no_head = on_disk["ancestry"]["params_no_head"]
    assert anc_no_head == on_disk["ancestry"]["params"] - (36 * 32 + 36)  # the head: width 32 x 36 source classes
    for r in rows:
        assert set(r) >= {"method", "depth", "params", "stored_params", "acc", "acc_ci95", "curve", "budget"}
        # 2 learngene seeds: too few for a CI (stats.MIN_N_CI), and said so
        assert 0.0 <= r["acc"] <= 1.0 and not _finite(r["acc_ci95"]) and r["ci_n"] == 2
        assert r["ci_level"] == "learngenes" and len(r["per_learngene"]) == 2
        want = sorted({e for e in cfg.vit.eval_epochs if e <= r["epochs"]} | {r["epochs"]})
        assert r["curve"]["epochs"] == want and len(r["curve"]["acc"]) == len(want)
        assert r["curve"]["acc"][-1] == pytest.approx(r["acc"])
        assert r["acc"] == pytest.approx(sum(r["per_learngene"]) / 2)
        assert [(s["learngene_seed"], s["seed"]) for s in r["per_seed"]] == [(0, 0), (1, 0)]
        assert r["budget"] == (r["method"] == "scratch" and r["epochs"] == 3)
        # like for like: the truncated ancestry (and weight selection from it) stores the ancestry without its
        # head, as genes keep no head
        stored = {"scratch": 0, "truncated": anc_no_head, "weight-selection": anc_no_head,
                  "frequency": genes["frequency"].stored_params,
                  "tleg": genes["tleg"].stored_params, "heur-lg": genes["heur-lg"].stored_params}[r["method"]]
        assert r["stored_params"] == stored
    # same depth and width, same architecture: every method's descendant has the same parameter count
    for d in cfg.vit.depths:
        for w in cfg.vit.widths:
            assert len({r["params"] for r in rows if r["depth"] == d and r["width"] == w}) == 1
    tleg = on_disk["tleg"]
    assert tleg["stored_fraction_of_ancestry"] == pytest.approx(genes["tleg"].stored_params / anc_no_head)
    assert tleg["stored_fraction_with_heads"] == pytest.approx(
        (genes["tleg"].stored_params + 36 * 32 + 36) / on_disk["ancestry"]["params"])
    assert on_disk["frequency"]["stored_fraction_of_ancestry"] == pytest.approx(
        genes["frequency"].stored_params / anc_no_head)
    assert on_disk["heur_lg"]["selected"] == genes["heur-lg"].block_indices
    assert on_disk["heur_lg"]["name"] == "gradient_stability" and len(on_disk["heur_lg"]["candidates"]) == 2


def test_smoke_fewshot_linearity_report_and_plot(smoke):
    cfg, out, report = smoke
    few = report["fewshot"]["5way1shot"]["rows"]
    assert {(r["method"], r["depth"]) for r in few.values()} == {(m, 3) for m in METHODS}
    assert all(r["episodes"] == cfg.evaluate.episodes and 0 <= r["acc"] <= 1 for r in few.values())
    s = report["linearity"]["summary"]
    assert s["depth"] == 3 and _finite(s["pooled_r2"]) and _finite(s["pooled_r2_shuffled"])
    assert len(report["linearity"]["rows"]) == s["n_tensors"] > 0
    md = (out / "report.md").read_text()
    assert "| depth | scratch (6 ep) | heur-lg (3 ep) | truncated (3 ep) | tleg (3 ep) |" in md and "| 4 |" in md
    assert "n/a" in md and "no CI (n = 2 < 3)" in md and "tleg - truncated (3 ep)" in md
    assert "shuffled" in md and "pooled R²" in md
    png = (out / "plots" / "vit_accuracy_vs_depth.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    for part in ("cache/ancestry/network.json", "cache/aux/network.json", "genes/tleg/learngene.json",
                 "genes/heur-lg/learngene.json", "config.json"):
        assert (out / part).is_file(), part


def test_rerun_reuses_the_cached_ancestry_aux_and_descendants(smoke, tmp_path):
    cfg, out, report = smoke
    again = run_vit(cfg, out, progress=False)
    assert again["ancestry"]["cached"] and again["tleg"]["cached"]
    assert [(r["method"], r["depth"], r["acc"]) for r in again["descendants"]["rows"]] == \
        [(r["method"], r["depth"], r["acc"]) for r in report["descendants"]["rows"]]
    # a changed setting that the descendants depend on retrains them, not the ancestry
    changed = load_config("vit-smoke", None, ["vit.descendant_epochs=1", "evaluate.methods=['tleg']", "vit.depths=[2]",
                                              "vit.budget_epochs=[]", "vit.widths=[32]"])
    third = run_vit(changed, out, progress=False)
    assert third["ancestry"]["cached"] and third["tleg"]["cached"]
    assert [r["curve"]["epochs"] for r in third["descendants"]["rows"]] == [[0, 1]]


def test_validation_criterion_chooses_blocks_on_open_world_pseudo_tasks(tmp_path):
    cfg = load_config("vit-smoke", None, [
        "criterion.name='validation'", "evaluate.methods=['heur-lg']", "vit.depths=[2]", "vit.widths=[32]",
        "evaluate.seeds=[0]", "vit.learngene_seeds=[0]", "vit.budget_epochs=[]",
        "criterion.pseudo_epochs=1", "vit.ancestry_epochs=1", "vit.descendant_epochs=1", "evaluate.episodes=1"])
    report = run_vit(cfg, tmp_path / "run", progress=False)
    crit = report["heur_lg"]
    assert crit["name"] == "validation" and "open-world" in crit["reason"]
    assert all(0.0 <= c["score"] <= 1.0 for c in crit["candidates"])
    best = max(c["score"] for c in crit["candidates"])
    assert [c["score"] for c in crit["candidates"] if c["blocks"] == crit["selected"]] == [best]
    assert "tleg" not in report and [r["method"] for r in report["descendants"]["rows"]] == ["heur-lg"]
    # a damaged cache entry is retrained, not trusted and not fatal
    weights = tmp_path / "run" / "cache" / "ancestry" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    again = run_vit(cfg, tmp_path / "run", progress=False)
    assert not again["ancestry"]["cached"]


def test_bad_settings_are_refused_before_training(tmp_path):
    with pytest.raises(ConfigError, match="paradigm"):
        run_vit(load_config("smoke"), tmp_path / "a", progress=False)
    with pytest.raises(ConfigError, match="model.name = 'vgg4' is not a registered ViT preset"):
        run_vit(load_config("vit-smoke", None, ["model.name='vgg4'"]), tmp_path / "b", progress=False)
    with pytest.raises(ConfigError, match="not a multiple of the ViT patch size"):
        run_vit(load_config("vit-smoke", None, ["vit.patch_size=3"]), tmp_path / "c", progress=False)
    with pytest.raises(ConfigError, match="vit.rule = 'stack' cannot build every depth"):
        run_vit(load_config("vit-smoke", None, ["vit.rule='stack'"]), tmp_path / "d", progress=False)
    with pytest.raises(ConfigError, match="evaluate.methods = 'wave' is not a registered transformer method"):
        run_vit(load_config("vit-smoke", None, ["evaluate.methods=['wave']"]), tmp_path / "e", progress=False)
    with pytest.raises(ConfigError, match="criterion.name = 'random' is not a registered criterion"):
        check_names(load_config("vit-smoke", None, ["criterion.name='random'"]))
    with pytest.raises(ConfigError, match="stream.test_fraction"):
        load_config("vit-smoke", None, ["stream.test_fraction=1.0"])
    (tmp_path / "gene").mkdir()
    (tmp_path / "gene" / "learngene.json").write_text("{}")
    with pytest.raises(ConfigError, match="holds a learngene"):
        run_vit(load_config("vit-smoke"), tmp_path / "gene", progress=False)


def _image_folder(root, images, labels, names):
    for img, lab in zip(images, labels):
        d = root / names[int(lab)]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img[0].numpy().astype(np.uint8)).save(d / f"{len(list(d.iterdir()))}.png")


def _novel_folders(cfg, tmp_path):
    """Support and query ImageFolders (3 images each) of three novel classes: a user's own few examples."""
    from learngene.prepare import load_data, make_split

    data = load_data(cfg)
    novel = list(make_split(cfg, data).novel)[:3]
    sup, qry = tmp_path / "support", tmp_path / "query"
    for i, c in enumerate(novel):
        idx = data.indices_of(c)
        _image_folder(sup, data.images[idx[:3]], [i] * 3, novel)
        _image_folder(qry, data.images[idx[3:6]], [i] * 3, novel)
    return data, novel, sup, qry


def test_inherit_trains_a_descendant_saves_it_for_predict_and_compares_scratch(smoke, tmp_path):
    from learngene.individual import load_individual

    cfg, out, _ = smoke
    data, novel, sup, qry = _novel_folders(cfg, tmp_path)
    result = inherit(out / "genes" / "tleg", sup, tmp_path / "model", query_dir=qry, depth=5, compare_scratch=True,
                     overrides=["individual.head_epochs=2", "individual.epochs=1"])
    assert result["classes"] == sorted(novel) and result["depth"] == 5 and result["kind"] == "tleg"
    assert 0.0 <= result["query_accuracy"] <= 1.0 and 0.0 <= result["scratch"]["query_accuracy"] <= 1.0
    assert result["curve"]["epochs"] == [1, 2, 3] and 0.0 <= result["ncm_query_accuracy"] <= 1.0
    model, meta = load_individual(tmp_path / "model")  # what `learngene predict` reads
    assert len(model.blocks) == 5 and meta["classes"] == result["classes"]
    assert meta["preprocessing"]["image_size"] == 16 and meta["query_accuracy"] == result["query_accuracy"]
    again, _ = load_network(tmp_path / "model", INDIVIDUAL)
    x = torch.randn(2, 1, 16, 16)
    assert torch.equal(model(x), again(x)) and model(x).shape == (2, 3)
    # Heur-LG genes too, without a query folder; an occupied --out needs overwrite
    with pytest.raises(ConfigError, match="not empty"):
        inherit(out / "genes" / "heur-lg", sup, tmp_path / "model", depth=2, overrides=["individual.epochs=1"])
    plain = inherit(out / "genes" / "heur-lg", sup, tmp_path / "model", depth=2, overrides=["individual.epochs=1"],
                    overwrite=True)
    assert plain["query_accuracy"] is None and plain["scratch"] is None
    two = tmp_path / "two"
    for i, c in enumerate(novel[:2]):
        _image_folder(two, data.images[data.indices_of(c)[:2]], [i] * 2, novel)
    with pytest.raises(DataError, match="lacks"):
        inherit(out / "genes" / "tleg", two, tmp_path / "m2", query_dir=qry, depth=2)


def test_cli_inherit_depth_compare_scratch_predict_and_inspect(smoke, tmp_path, capsys):
    """The transformer path from the command line: inherit --depth (deeper than the ancestry) with --compare
    scratch, predict on the result, inspect of both gene kinds."""
    from learngene.cli import main

    cfg, out, _ = smoke
    data, novel, sup, qry = _novel_folders(cfg, tmp_path)
    args = ["inherit", "--gene", str(out / "genes" / "tleg"), "--depth", "5", "--support", str(sup), "--query",
            str(qry), "--out", str(tmp_path / "m"), "--compare", "scratch"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "depth-5 tleg descendant" in printed and "query accuracy" in printed
    assert "scratch (same architecture, random init, same budget): query accuracy" in printed
    assert main(["predict", "--model", str(tmp_path / "m"), str(qry), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 9 and all(r["class"] in novel for r in rows)
    for kind in ("tleg", "heur-lg"):
        assert main(["inspect", str(out / "genes" / kind)]) == 0
        assert kind in capsys.readouterr().out
    no_depth = ["inherit", "--gene", str(out / "genes" / "tleg"), "--support", str(sup), "--out", str(tmp_path / "m2")]
    assert main(no_depth) == 2
    assert "give the descendant's depth, e.g. --depth 6" in capsys.readouterr().err


def test_cli_inherit_set_is_used_or_refused(smoke, tmp_path, capsys):
    """`inherit --set` either changes what trains (the descendant's epochs: its accuracy curve) or is refused."""
    from learngene.cli import main

    cfg, out, _ = smoke
    _, _, sup, qry = _novel_folders(cfg, tmp_path)
    base = ["inherit", "--gene", str(out / "genes" / "heur-lg"), "--depth", "2", "--support", str(sup), "--query",
            str(qry)]
    assert main([*base, "--out", str(tmp_path / "a"), "--set", "train.epochs=3"]) == 2
    assert "config key train.epochs is not read by `learngene inherit` from a transformer learngene, which reads " \
           "individual.classifier" in capsys.readouterr().err and not (tmp_path / "a").exists()
    assert main([*base, "--out", str(tmp_path / "b"), "--preset", "smoke"]) == 2
    assert "configuration given has paradigm = 'cnn'" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "c"), "--set", "individual.epochs=2"]) == 0
    from learngene.individual import load_individual

    assert load_individual(tmp_path / "c")[1]["training"]["epochs"] == 2


def test_progress_bars_and_log_lines_unless_quiet(tmp_path, capsys, monkeypatch):
    """Every long step shows a bar over its epochs (with the ETA) and says what it does; --quiet silences both.
    Bars draw on a terminal only (test_logging.py), so stderr plays one."""
    import sys

    from learngene.cli import main

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)

    args = ["run", "--preset", "vit-smoke", "--device", "cpu", "--set", "evaluate.methods=['tleg']",
            "--set", "vit.depths=[2]", "--set", "evaluate.seeds=[0]", "--set", "vit.ancestry_epochs=2",
            "--set", "vit.aux_epochs=2", "--set", "vit.descendant_epochs=1", "--set", "evaluate.episodes=1"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    assert "ancestry: training 3 blocks" in err and "tleg: distilling the ancestry" in err
    for bar in ("ancestry:   0%|", "auxiliary net:   0%|", "tleg depth 2 seed 0:   0%|"):
        assert bar in err, bar  # a bar over the epochs, opened before the first: n/total [elapsed<remaining]
    assert "0/2 [00:00<?" in err
    assert main([*args, "--out", str(tmp_path / "b"), "--quiet"]) == 0
    quiet = capsys.readouterr().err
    assert "ancestry" not in quiet and "%|" not in quiet


def test_grid_of_widths_rows_and_width_rules(smoke):
    """vit-smoke's grid: every method at widths 16 and 32 (truncated at the ancestry's only), rows with width and
    heads, weight selection copied from truncated where it is the same model, the width rules recorded."""
    cfg, out, report = smoke
    desc = report["descendants"]
    assert desc["widths"] == [16, 32] and desc["ancestry_width"] == 32
    assert set(desc["width_rules"]) == set(cfg.evaluate.methods) and "uniformly spaced" in desc["width_rules"]["tleg"]
    rows = {(r["method"], r["depth"], r["width"]): r for r in desc["rows"]}
    assert {(m, w) for m, _, w in rows} >= {(m, w) for m in ("scratch", "tleg", "frequency", "weight-selection")
                                            for w in (16, 32)}
    assert all(r["heads"] == 2 for r in rows.values())
    assert rows[("scratch", 2, 16)]["params"] < rows[("scratch", 2, 32)]["params"]
    assert ("truncated", 2, 16) not in rows
    assert any(s["method"] == "truncated" and s["width"] == 16 and "ancestry's width" in s["reason"]
               for s in desc["skipped"])
    twin = rows[("weight-selection", 2, 32)]
    assert twin["same_as"] == "truncated" and twin["acc"] == rows[("truncated", 2, 32)]["acc"]
    assert "same_as" not in rows[("weight-selection", 4, 32)]  # deeper than the ancestry: its own training
    fq = report["frequency"]
    assert fq["train_seconds"] == 0.0 and fq["stored_params"] == rows[("frequency", 2, 16)]["stored_params"]
    assert (out / "plots" / "vit_accuracy_vs_params.png").read_bytes().startswith(b"\x89PNG")
    from learngene.vit.report import render_vit_report

    md = render_vit_report(report)
    assert "## Test accuracy on the novel classes, width 16" in md and "| width | depth | heur-lg - scratch" in md
    # paired differences at every shape, never a model against its own copy (weight selection = truncated here)
    paired = desc["paired"]
    assert {(p["depth"], p["width"]) for p in paired if p["a"] == "tleg" and p["b"] == "scratch"} == \
        {(d, w) for d in cfg.vit.depths for w in cfg.vit.widths}
    assert not any({p["a"], p["b"]} == {"weight-selection", "truncated"} for p in paired)


def test_cli_inherit_width_end_to_end(smoke, tmp_path, capsys):
    """`inherit --width` (and --heads) for every transformer kind: a narrower or wider descendant, trained, saved,
    predicted from; the scratch comparison has the same shape."""
    from learngene.cli import main
    from learngene.individual import load_individual

    cfg, out, _ = smoke
    _, novel, sup, qry = _novel_folders(cfg, tmp_path)
    for kind, width, heads in (("tleg", 48, None), ("frequency", 24, None), ("heur-lg", 16, 1)):
        args = ["inherit", "--gene", str(out / "genes" / kind), "--depth", "5", "--width", str(width),
                "--support", str(sup), "--query", str(qry), "--out", str(tmp_path / kind), "--compare", "scratch",
                "--set", "individual.head_epochs=2", *(["--heads", str(heads)] if heads else [])]
        assert main(args) == 0, capsys.readouterr().err
        printed = capsys.readouterr().out
        assert f"depth-5 {kind} descendant (width {width}, {heads or 2} heads)" in printed
        model, meta = load_individual(tmp_path / kind)
        assert model.embed_dim == width and len(model.blocks) == 5 and meta["width"] == width
        assert model.blocks[0].attn.num_heads == (heads or 2)
    assert main(["predict", "--model", str(tmp_path / "frequency"), str(qry), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 9
    bad = ["inherit", "--gene", str(out / "genes" / "tleg"), "--depth", "2", "--width", "40", "--heads", "3",
           "--support", str(sup), "--out", str(tmp_path / "bad")]
    assert main(bad) == 2 and "divides the width 40" in capsys.readouterr().err
