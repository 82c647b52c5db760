"""`learngene run --preset smoke` end to end, then every later CLI stage on its outputs."""

import json

import pytest
import torch
from PIL import Image

from learngene.cli import main
from learngene.evaluate import list_methods
from learngene.registry import METHODS as REGISTRY

METHODS = list_methods()
GENE_METHODS = [m for m in METHODS if REGISTRY.get(m).from_gene]
NCM_METHODS = [m for m in METHODS if REGISTRY.get(m).frozen]


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
        # nearest-class-mean rows do not train: no convergence curve
        assert len(r["curve"]) == (0 if m in NCM_METHODS else report["config"]["individual"]["epochs"])
        assert len(r["runs"]) == r["n"]
        if m != "scratch":
            gain = r["vs_scratch"]
            assert gain["n"] == r["n"] and isinstance(gain["ci_excludes_0"], bool)
    assert ind["methods"]["ncm-collective"]["params"] == ind["methods"]["joint"]["params"]  # same backbone
    assert ind["methods"]["ncm-gene"]["params"] < ind["methods"]["ncm-collective"]["params"]
    assert "mean" in ind["settings"]["5way1shot"]["ncm_collective_minus_joint"]
    for name in ("joint", "protonet"):
        assert ind["baselines"][name]["budget_images"] > 0
        assert (run_dir / "collective" / "baselines" / name / "model.safetensors").is_file()
    assert ind["methods"]["scratch"]["inherited_params"] == 0
    assert ind["methods"]["learngene"]["inherited_params"] > 0
    assert set(ind["settings"]) == set(report["config"]["evaluate"]["settings"])
    assert report["criterion"]["selected"] and all(n.startswith("features.") for n in report["criterion"]["selected"])
    trained = [m for m in METHODS if m not in NCM_METHODS]
    assert all(0 <= ind["methods"][m]["ece_mean"] <= 1 for m in trained)  # calibration of the trained rows
    assert "ece_mean" not in ind["methods"]["ncm-collective"]
    assert 0.0 <= report["collective"]["open_world"]["auroc"] <= 1.0
    assert report["seed"] == 0 and report["config"]["preset"] == "smoke"
    split = report["split"]
    assert split["novel"] and not set(split["novel"]) & set(split["source"])
    for name in ("report.md", "gene/learngene.json", "gene/model.safetensors", "plots/accuracy_5way1shot.png",
                 "plots/convergence_5way1shot.png", "plots/criterion_scores.png", "plots/tradeoff_params_5way1shot.png",
                 "plots/tradeoff_time_5way1shot.png"):
        assert (run_dir / name).is_file(), name
    md = (run_dir / "report.md").read_text()
    assert "| learngene |" in md and "| ncm-collective |" in md and "| protonet |" in md
    assert "vs scratch (paired)" in md and "ncm-collective - joint" in md
    assert "calibration (ECE of the top softmax score" in md and "not probabilities" in md


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
    out = capsys.readouterr().out
    assert "query accuracy" in out and "calibration error (ECE)" in out and "not probabilities" in out
    manifest = json.loads((tmp_path / "model" / "model.json").read_text())
    cal = manifest["query_calibration"]  # issue 19 item 9: measured on the query folder, kept with the model
    assert 0 <= cal["ece"] <= 1 and cal["accuracy"] == pytest.approx(manifest["query_accuracy"])
    # issue 19 item 10: inspect describes a model instead of saying "not a learngene"
    assert main(["inspect", str(tmp_path / "model")]) == 0
    shown = capsys.readouterr().out
    assert shown.startswith("individual model") and ", ".join(manifest["classes"]) in shown
    assert "query accuracy" in shown and "not calibrated probabilities" in shown
    assert manifest["classes"] == sorted(c.replace("+", "_") for c in classes)
    assert main(["predict", "--model", str(tmp_path / "model"), str(tmp_path / "query"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 9 and all(r["class"] in manifest["classes"] and 0 < r["score"] <= 1 for r in rows)
    # the same call from Python (issue 19 item 2): same rows, and the same scores from a tensor of pixels
    import learngene as lg
    from learngene.data.images import load_image

    assert lg.predict(tmp_path / "model", tmp_path / "query") == rows
    model, meta = lg.load_individual(tmp_path / "model")
    pre = meta["preprocessing"]
    pixels = torch.stack([load_image(r["image"], pre["image_size"], pre["channels"]) for r in rows])
    again = lg.predict(model, pixels, classes=meta["classes"], preprocessing=pre)
    assert [(r["class"], r["score"]) for r in again] == [(r["class"], r["score"]) for r in rows]
    # an existing output directory is refused without --overwrite
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_inherit_compare_scratch_trains_the_same_architecture_with_the_same_budget(run_dir, tmp_path, capsys):
    from learngene.config import load_config
    from learngene.prepare import load_data

    data = load_data(load_config("smoke"))
    classes = json.loads((run_dir / "report.json").read_text())["split"]["novel"][:3]
    _write_folder(tmp_path / "support", data, classes, 3)
    _write_folder(tmp_path / "query", data, classes, 3, offset=3)
    args = ["inherit", "--gene", str(run_dir / "gene"), "--support", str(tmp_path / "support"), "--query",
            str(tmp_path / "query"), "--out", str(tmp_path / "model"), "--preset", "smoke", "--compare", "scratch"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "query accuracy" in out and "scratch (same architecture, random init, same budget): query accuracy" in out
    manifest = json.loads((tmp_path / "model" / "model.json").read_text())
    assert manifest["scratch"]["params"] == manifest["params"]  # the same architecture
    assert 0.0 <= manifest["scratch"]["accuracy"] <= 1.0
    bad = ["inherit", "--gene", str(run_dir / "gene"), "--support", str(tmp_path / "support"), "--out",
           str(tmp_path / "m2"), "--depth", "4"]
    assert main(bad) == 2
    assert "--depth builds transformer descendants" in capsys.readouterr().err


def _expected_starts(run_dir) -> dict[str, str]:
    """Fingerprints of the weights each gene-based method must start every target task from: the gene file's
    tensors for ``learngene``, the collective network's blocks for the ablations."""
    from learngene.collective_run import load_collective_run
    from learngene.evaluate import ablation_genes
    from learngene.gene import Learngene
    from learngene.individual import weights_fingerprint

    gene = Learngene.load(run_dir / "gene")
    run = load_collective_run(run_dir / "collective")
    network = run["network"]
    ablations = ablation_genes(network, network.conv_layer_names(), gene.layer_names,
                               run["meta"]["input_spec"], run["config"].seed)
    genes = {"learngene": gene, **ablations}
    return {m: weights_fingerprint(g.state_dict_for("")) for m, g in genes.items()}


def _assert_fresh_starts(individual: dict, expected: dict[str, str]) -> None:
    for setting, res in individual["settings"].items():
        for m, r in res["methods"].items():
            if m not in GENE_METHODS:
                continue
            starts = [run["start_sha256"] for run in r["runs"]]
            assert len(starts) == r["n"] >= 2, (setting, m)
            assert starts == [expected[m]] * len(starts), (
                f"{m} ({setting}) did not start every task from its gene")


def test_every_target_task_starts_from_the_gene_file(run_dir):
    report = json.loads((run_dir / "report.json").read_text())
    expected = _expected_starts(run_dir)
    assert set(GENE_METHODS) <= set(report["individual"]["methods"])
    _assert_fresh_starts(report["individual"], expected)


def test_a_model_reused_across_target_tasks_is_caught(run_dir, monkeypatch):
    """Inject the paper code's bug (one task's fine-tuned model starts the next): the check must fail."""
    import learngene.evaluate as ev
    from learngene.gene import Learngene
    from learngene.run import evaluate_run

    built: dict = {}
    real = ev.build_individual

    def reuse(gene, spec, ways, *, seed=0, inherit=True):
        key = (tuple(gene.layer_names), inherit)
        if key not in built:
            built[key] = real(gene, spec, ways, seed=seed, inherit=inherit)
        return built[key]  # trained in place by the previous episode

    monkeypatch.setattr(ev, "build_individual", reuse)
    cfg = json.loads((run_dir / "collective" / "config.json").read_text())
    from learngene.config import config_from_dict

    cfg = config_from_dict(cfg)
    cfg.evaluate.methods = ["learngene", "scratch"]
    result = evaluate_run(run_dir / "collective", Learngene.load(run_dir / "gene"), cfg=cfg, progress=False)
    with pytest.raises(AssertionError, match="did not start every task from its gene"):
        _assert_fresh_starts(result, _expected_starts(run_dir))


def test_rerunning_evaluate_reuses_the_cached_baselines(run_dir, tmp_path, monkeypatch):
    """`learngene evaluate` on the run trains nothing for joint/protonet and gets the same rows."""
    from learngene import baselines

    def no_training(*args, **kwargs):
        raise AssertionError("a cached baseline was trained again")

    monkeypatch.setattr(baselines, "train_joint", no_training)
    monkeypatch.setattr(baselines, "train_protonet", no_training)
    assert main(["evaluate", "--run", str(run_dir / "collective"), "--gene", str(run_dir / "gene"),
                 "--out", str(tmp_path / "eval"), "--quiet"]) == 0
    again = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    first = json.loads((run_dir / "report.json").read_text())["individual"]
    assert again["baselines"] == first["baselines"]  # the report does not depend on the cache's state
    for name in ("joint", "protonet", "ncm-collective"):
        assert again["methods"][name]["accuracies"] == first["methods"][name]["accuracies"]
    # issue 19 item 10: a report and plots beside evaluation.json, as `run` writes them
    md = (tmp_path / "eval" / "evaluation.md").read_text()
    assert md.startswith("# learngene evaluation") and "| learngene |" in md and "vs scratch (paired)" in md
    for setting in again["settings"]:
        assert (tmp_path / "eval" / "plots" / f"accuracy_{setting}.png").is_file()
        assert (tmp_path / "eval" / "plots" / f"convergence_{setting}.png").is_file()


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

    from learngene.collective_run import load_collective_run
    from learngene.data import TaskStream
    from learngene.evaluate import evaluate_methods
    from learngene.gene import Learngene
    from learngene.prepare import load_data

    run = load_collective_run(run_dir / "collective")
    cfg = copy.deepcopy(run["config"])
    cfg.evaluate.episodes, cfg.evaluate.seeds = 2, [0]
    data = load_data(cfg)
    novel = list(TaskStream.from_manifest(data, run["stream_manifest"]).split.novel)
    network, spec = run["network"], run["meta"]["input_spec"]
    names = network.conv_layer_names()
    bottom = Learngene.from_model(network, names[:2], input_spec=spec)
    both = evaluate_methods(cfg, data, novel, network, bottom, names, spec,
                            methods=["learngene", "gene-bottom"], progress=False)["methods"]
    alone = evaluate_methods(cfg, data, novel, network, bottom, names, spec,
                             methods=["gene-bottom"], progress=False)["methods"]
    assert both["gene-bottom"]["same_as"] == "learngene" and "same_as" not in both["learngene"]
    assert "same_as" not in alone["gene-bottom"]
    assert both["gene-bottom"]["accuracies"] == alone["gene-bottom"]["accuracies"] == both["learngene"]["accuracies"]


def test_overwrite_then_resume_never_reuses_the_earlier_runs_model(tmp_path, monkeypatch, capsys):
    """An --overwrite start clears the earlier run's outputs: interrupted, its --resume trains this config's
    model instead of taking the earlier (finished) one for it."""
    from learngene.collective.trainer import CollectiveTrainer

    out = tmp_path / "run"
    base = ["run", "--preset", "smoke", "--out", str(out), "--quiet", "--set", "stream.tasks=2"]
    assert main([*base, "--set", "train.epochs=1"]) == 0
    real = CollectiveTrainer.train_epoch
    calls = {"n": 0}

    def interrupted(self, t, epoch):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(self, t, epoch)

    monkeypatch.setattr(CollectiveTrainer, "train_epoch", interrupted)
    assert main([*base, "--set", "train.epochs=3", "--overwrite"]) == 130
    assert not (out / "collective" / "collective.json").exists()  # the earlier run's report is gone
    monkeypatch.setattr(CollectiveTrainer, "train_epoch", real)
    assert main([*base, "--set", "train.epochs=3", "--resume"]) == 0
    report = json.loads((out / "collective" / "collective.json").read_text())
    assert [len(t["epochs"]) for t in report["tasks"]] == [3, 3]


def test_a_criterion_that_scores_no_pseudo_tasks_needs_no_pseudo_task_data(run_dir, tmp_path):
    """gradient_stability never draws pseudo-tasks, so settings only the validation criterion uses cannot fail it."""
    args = ["select", "--run", str(run_dir / "collective"), "--out", str(tmp_path / "g"), "--set",
            "criterion.name='gradient_stability'", "--set", "criterion.pseudo_shots=8"]
    assert main(args) == 0


def test_run_resume_needs_no_preset(run_dir, tmp_path, capsys):
    """Issue 19 item 10: `run --out R --resume` demanded --preset or --config although the run stores its config."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    assert main(["run", "--out", str(run), "--resume", "--quiet", "--device", "cpu"]) == 0
    before = json.loads((run_dir / "report.json").read_text())
    after = json.loads((run / "report.json").read_text())
    assert after["config"] == before["config"] and after["criterion"]["selected"] == before["criterion"]["selected"]
    # a changed key is still refused, as with --preset
    assert main(["run", "--out", str(run), "--resume", "--quiet", "--set", "train.epochs=7"]) == 2
    assert "different configuration (train.epochs differ)" in capsys.readouterr().err


def test_predict_json_keeps_class_names_as_written(run_dir, tmp_path, capsys):
    """Issue 19 item 10: `predict --json` printed "caf\\u00e9" for a class folder named café."""
    import numpy as np

    rng = np.random.default_rng(0)
    for name in ("café", "日本語", "😀-emoji"):
        (tmp_path / "support" / name).mkdir(parents=True)
        for k in range(2):
            Image.fromarray(rng.integers(0, 256, (20, 20), dtype=np.uint8)).save(tmp_path / "support" / name / f"{k}.png")
    assert main(["inherit", "--gene", str(run_dir / "gene"), "--support", str(tmp_path / "support"), "--out",
                 str(tmp_path / "m"), "--preset", "smoke", "--set", "individual.epochs=1"]) == 0
    capsys.readouterr()
    assert main(["predict", "--model", str(tmp_path / "m"), str(tmp_path / "support"), "--json"]) == 0
    out = capsys.readouterr().out
    assert "\\\\u" not in out and "café" in out
    assert {r["class"] for r in json.loads(out)} <= {"café", "日本語", "😀-emoji"}
