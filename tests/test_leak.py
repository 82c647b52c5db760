"""No stage before the novel-class evaluation may look at a novel class (issue 17, point 1).

End to end on the smoke presets, through public entry points only: every novel-class image is replaced by
noise, and everything chosen or trained before the evaluation must come out bit-identical -- the collective
weights (and its gradient record, joint and ProtoNet baselines), the criterion's scores and
choice, the gene; on the transformer path the ancestry, the aux net, both genes and Heur-LG's criterion; and
`tune`'s scores. Feeding the novel classes to any of them (the CNN criterion's pool, Heur-LG's validation pool,
`tune`'s scorer) makes these tests fail.

The class split is fixed from the clean data (an explicit split over relabelled groups): the glyph split keeps
look-alike classes together by their pixels, so noise would otherwise move classes between the parts.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import learngene as lg
from learngene.config import load_config
from learngene.data import ImageSet
from learngene.prepare import load_data, make_split
from learngene.registry import SOURCES
from learngene.run import run_paradigm
from learngene.tune import tune

PARTS = {"source": "S", "open_world": "O", "novel": "N"}


def _fixed_split(preset: str) -> tuple[ImageSet, ImageSet]:
    """The preset's data with its split frozen into groups S/O/N: (clean, every novel image replaced by noise)."""
    cfg = load_config(preset=preset)
    data = load_data(cfg)
    split = make_split(cfg, data)
    groups = [PARTS[split.part_of(c)] if split.part_of(c) else "X" for c in data.classes]
    clean = ImageSet(data.images.clone(), data.labels, list(data.classes), groups, name="leak")
    novel = torch.isin(data.labels, torch.tensor([data.class_index(c) for c in split.novel]))
    noisy = data.images.clone()
    gen = torch.Generator().manual_seed(12345)
    noisy[novel] = torch.randint(0, 256, noisy[novel].shape, dtype=torch.uint8, generator=gen)
    assert not torch.equal(noisy, data.images)
    return clean, ImageSet(noisy, data.labels, list(data.classes), groups, name="leak")


@pytest.fixture
def leak_data():
    """Sources 'leak-smoke' and 'leak-vit-smoke' serving ``leak_data[preset]``: the test swaps clean for noisy
    data under the same name, so the two runs have the same config (and cache fingerprints)."""
    served: dict[str, ImageSet] = {}
    for preset in ("smoke", "vit-smoke"):
        lg.register_source(f"leak-{preset}")(lambda root, image_size, channels, seed, _p=preset, **kw: served[_p])
    yield served
    for preset in ("smoke", "vit-smoke"):
        SOURCES.unregister(f"leak-{preset}")


def _config(preset: str, overrides: list[str]):
    return load_config(preset=preset, overrides=[f"data.source='leak-{preset}'", "data.split='explicit'",
                                                 "data.source_groups=['S']", "data.open_world_groups=['O']",
                                                 "data.novel_groups=['N']", *overrides])


def _tensors(root: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {str(p.relative_to(root)): load_file(p) for p in sorted(root.rglob("*.safetensors"))}


def _assert_same_tensors(a: Path, b: Path, must_have: list[str]) -> None:
    ta, tb = _tensors(a), _tensors(b)
    assert sorted(ta) == sorted(tb)
    for word in must_have:  # the comparison covers what it should
        assert any(word in name for name in ta), f"no *.safetensors with {word!r} under {a}: {sorted(ta)}"
    for name in ta:
        assert ta[name].keys() == tb[name].keys(), name
        for key in ta[name]:
            assert torch.equal(ta[name][key], tb[name][key]), f"{name}: {key} depends on the novel classes"


def _without_seconds(obj):
    if isinstance(obj, dict):
        return {k: _without_seconds(v) for k, v in obj.items() if "seconds" not in k}
    if isinstance(obj, list):
        return [_without_seconds(v) for v in obj]
    return obj


def test_cnn_paradigm_and_tune_never_see_novel_classes(leak_data, tmp_path):
    cfg = _config("smoke", ["evaluate.episodes=1"])  # the novel-class evaluation may differ; it only has to run
    reports, tuned = {}, {}
    for kind, data in zip(("clean", "noisy"), _fixed_split("smoke")):
        leak_data["smoke"] = data
        reports[kind] = run_paradigm(cfg, tmp_path / kind, progress=False)
        tuned[kind] = tune(cfg, [], tmp_path / f"tune-{kind}", setting="5way1shot", episodes=4, joint=True,
                           progress=False, score="individual")
    assert _without_seconds(reports["clean"]["individual"]) != _without_seconds(reports["noisy"]["individual"])
    _assert_same_tensors(tmp_path / "clean", tmp_path / "noisy",
                         ["collective/model", "gradient_stats", "baselines/joint",
                          "baselines/protonet", "gene/model"])
    assert reports["clean"]["criterion"] == reports["noisy"]["criterion"]  # scores of every window and the choice
    genes = [json.loads((tmp_path / k / "gene" / "learngene.json").read_text()) for k in ("clean", "noisy")]
    assert genes[0]["criterion"] == genes[1]["criterion"] and genes[0]["layers"] == genes[1]["layers"]
    for key in ("collective", "stream", "memory", "images_seen", "joint", "individual"):
        trials = [json.loads(next((tmp_path / f"tune-{k}" / "trials").glob("*.json")).read_text())["result"][key]
                  for k in ("clean", "noisy")]
        assert _without_seconds(trials[0]) == _without_seconds(trials[1]), key
    assert _without_seconds(tuned["clean"]["rows"]) == _without_seconds(tuned["noisy"]["rows"])


def test_transformer_path_never_sees_novel_classes(leak_data, tmp_path):
    cfg = _config("vit-smoke", ["criterion.name='validation'", "vit.depths=[2]", "vit.widths=[32]", "evaluate.seeds=[0]",
                                "vit.descendant_epochs=1", "vit.scratch_epochs=1", "vit.eval_epochs=[0,1]",
                                "individual.epochs=1", "evaluate.episodes=1"])
    reports = {}
    for kind, data in zip(("clean", "noisy"), _fixed_split("vit-smoke")):
        leak_data["vit-smoke"] = data
        reports[kind] = lg.run_vit(cfg, tmp_path / kind, progress=False)
    assert _without_seconds(reports["clean"]["descendants"]) != _without_seconds(reports["noisy"]["descendants"])
    _assert_same_tensors(tmp_path / "clean", tmp_path / "noisy", ["ancestry", "aux", "heur-lg", "tleg", "frequency"])
    for key in ("ancestry", "heur_lg", "tleg", "frequency"):
        same = [{k: v for k, v in _without_seconds(reports[r][key]).items() if k not in ("dir", "cached")}
                for r in ("clean", "noisy")]
        assert same[0] == same[1], key
    assert reports["clean"]["heur_lg"]["name"] == "validation" and len(reports["clean"]["heur_lg"]["candidates"]) > 1
