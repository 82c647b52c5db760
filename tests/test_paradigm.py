"""`learngene run --preset smoke` end to end, then every later CLI stage on its outputs."""

import json

import pytest
import torch
from PIL import Image

from learngene.cli import main
from learngene.evaluate import METHODS


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke") / "run"
    assert main(["run", "--preset", "smoke", "--out", str(out), "--quiet", "--device", "cpu"]) == 0
    return out


def test_report_schema(run_dir):
    report = json.loads((run_dir / "report.json").read_text())
    ind = report["individual"]
    for m in METHODS:
        r = ind["methods"][m]
        assert 0.0 <= r["acc_mean"] <= 1.0, m
        assert r["params"] > 0 and r["inherited_params"] >= 0
        assert "acc_ci95" in r
        assert len(r["curve"]) == report["config"]["individual"]["epochs"]
    assert ind["methods"]["scratch"]["inherited_params"] == 0
    assert ind["methods"]["learngene"]["inherited_params"] > 0
    assert set(ind["settings"]) == set(report["config"]["evaluate"]["settings"])
    assert report["criterion"]["selected"] and all(n.startswith("features.") for n in report["criterion"]["selected"])
    assert 0.0 <= report["collective"]["open_world"]["auroc"] <= 1.0
    assert report["seed"] == 0 and report["config"]["preset"] == "smoke"
    split = report["split"]
    assert split["novel"] and not set(split["novel"]) & set(split["source"])
    for name in ("report.md", "gene/learngene.json", "gene/model.safetensors", "plots/accuracy_5way1shot.png",
                 "plots/convergence_5way1shot.png", "plots/criterion_heatmap.png"):
        assert (run_dir / name).is_file(), name
    assert "| learngene |" in (run_dir / "report.md").read_text()


def test_inspect(run_dir, capsys):
    assert main(["inspect", str(run_dir / "gene")]) == 0
    out = capsys.readouterr().out
    assert "features." in out


def _write_folder(root, data, classes, per_class, offset=0):
    for c in classes:
        d = root / c.replace("+", "_")
        d.mkdir(parents=True)
        for k, i in enumerate(data.indices_of(c)[offset : offset + per_class].tolist()):
            img = data.images[i, 0].numpy()
            Image.fromarray(img).resize((40, 40)).convert("RGB").save(d / f"{k}.png")  # other size and mode


def test_inherit_and_predict(run_dir, tmp_path, capsys):
    from learngene.config import load_config
    from learngene.prepare import load_data

    data = load_data(load_config("smoke"))
    split = json.loads((run_dir / "report.json").read_text())["split"]
    classes = split["novel"][:3]
    _write_folder(tmp_path / "support", data, classes, 3)
    _write_folder(tmp_path / "query", data, classes, 3, offset=3)
    args = ["inherit", "--gene", str(run_dir / "gene"), "--support", str(tmp_path / "support"),
            "--query", str(tmp_path / "query"), "--out", str(tmp_path / "model"), "--preset", "smoke"]
    assert main(args) == 0
    assert "query accuracy" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "model" / "model.json").read_text())
    assert manifest["classes"] == sorted(c.replace("+", "_") for c in classes)
    assert main(["predict", "--model", str(tmp_path / "model"), str(tmp_path / "query"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 9 and all(r["class"] in manifest["classes"] and 0 < r["confidence"] <= 1 for r in rows)
    # an existing output directory is refused without --overwrite
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_fresh_gene_per_target_task(run_dir):
    from learngene.gene import Learngene

    before = Learngene.load(run_dir / "gene").state_dict_for("")
    after = Learngene.load(run_dir / "gene").state_dict_for("")  # the evaluation never wrote into the gene
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["collective", "--preset", "nope", "--out", "X"], "unknown preset 'nope'"),
        (["collective", "--preset", "smoke", "--set", "train.epochs=-2", "--out", "X"], "must be > 0"),
        (["collective", "--preset", "smoke", "--set", "data.source='omniglot'", "--data-root", "/nonexistent",
          "--out", "X"], "/nonexistent"),
        (["collective", "--preset", "smoke", "--device", "cuda:7", "--out", "X"], "CUDA"),
        (["inspect", "/nonexistent/gene"], "learngene"),
        (["predict", "--model", "/nonexistent/model", "a.png"], "/nonexistent/model"),
    ],
)
def test_cli_errors_are_one_clear_line(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if argv[-1] == "X":
        argv = argv[:-1] + [str(tmp_path / "out")]
    if "cuda:7" in argv and torch.cuda.is_available():
        pytest.skip("CUDA present")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_duplicate_gene_methods_are_trained_once_and_match_a_real_run(run_dir):
    """gene-bottom with the learngene's own layers is reported as a copy, equal to training it for real."""
    import copy

    from learngene.data import TaskStream
    from learngene.evaluate import evaluate_methods, gene_from_network
    from learngene.pipeline import load_collective_run
    from learngene.prepare import load_data

    run = load_collective_run(run_dir / "collective")
    cfg = copy.deepcopy(run["config"])
    cfg.evaluate.episodes, cfg.evaluate.seeds = 2, [0]
    data = load_data(cfg)
    novel = list(TaskStream.from_manifest(data, run["stream_manifest"]).split.novel)
    network, spec = run["network"], run["meta"]["input_spec"]
    names = network.conv_layer_names()
    bottom = gene_from_network(network, names[:2], spec)
    both = evaluate_methods(cfg, data, novel, network, bottom, names, spec,
                            methods=["learngene", "gene-bottom"], progress=False)["methods"]
    alone = evaluate_methods(cfg, data, novel, network, bottom, names, spec,
                             methods=["gene-bottom"], progress=False)["methods"]
    assert both["gene-bottom"]["same_as"] == "learngene" and "same_as" not in both["learngene"]
    assert "same_as" not in alone["gene-bottom"]
    assert both["gene-bottom"]["accuracies"] == alone["gene-bottom"]["accuracies"] == both["learngene"]["accuracies"]
