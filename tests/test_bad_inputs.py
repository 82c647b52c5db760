"""Every kind of bad input a user can give, in one table: what they did -> the exact phrase learngene answers.

Each row provokes one mistake the way a user makes it -- mostly a `learngene ...` command line run in-process
through ``learngene.cli.main`` (exit code 2, one line on stderr, never a traceback), a few through the Python
API (the LearngeneError subclass and its message). docs/ERRORS.md is the same table written for users;
``test_every_row_is_documented`` keeps the two in sync.

A smoke run (collective -> gene -> evaluation) and one inherited model are built once per module and copied
before a row modifies them.
"""

from __future__ import annotations

import json
import shutil
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from learngene.cli import main
from learngene.errors import ConfigError, DataError, GeneError, LearngeneError, ModelError

DOCS = Path(__file__).resolve().parents[1] / "docs" / "ERRORS.md"
SMOKE = ["--preset", "smoke"]


# ------------------------------------------------------------------------------------------ shared artifacts
class Built:
    """The artifacts of one smoke run, built lazily (a config-only row never pays for the run)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @cached_property
    def run(self) -> Path:
        out = self.root / "run"
        assert main(["run", *SMOKE, "--out", str(out), "--quiet", "--device", "cpu"]) == 0
        return out

    @property
    def collective(self) -> Path:
        return self.run / "collective"

    @property
    def gene(self) -> Path:
        return self.run / "gene"

    @cached_property
    def support(self) -> Path:
        return image_folder(self.root / "support", ["alpha", "beta", "gamma"], 2)

    @cached_property
    def model(self) -> Path:
        out = self.root / "model"
        args = ["inherit", "--gene", str(self.gene), "--support", str(self.support), "--out", str(out),
                "--preset", "smoke"]
        assert main(args) == 0
        return out


def image_folder(root: Path, classes: list[str], per_class: int, seed: int = 0) -> Path:
    """An ImageFolder tree of small random gray PNGs (other size than the gene's: inherit resizes)."""
    rng = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            Image.fromarray(rng.integers(0, 256, (20, 20), dtype=np.uint8)).save(root / c / f"{k}.png")
    return root


@dataclass
class Ctx:
    built: Built
    tmp: Path
    mp: pytest.MonkeyPatch | None = None  # for the few rows that simulate what a test machine cannot do

    def copy(self, src: Path, name: str) -> Path:
        dst = self.tmp / name
        shutil.copytree(src, dst)
        return dst

    def gene_copy(self) -> Path:
        return self.copy(self.built.gene, "gene")

    def collective_copy(self) -> Path:
        return self.copy(self.built.collective, "collective")


@dataclass
class Api:
    """A row driven through the Python API: ``call()`` must raise ``error``."""

    error: type[LearngeneError]
    call: Callable[[], Any]


def flip_byte(path: Path, at: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0xFF
    path.write_bytes(bytes(data))


def edit_json(path: Path, change: Callable[[dict], None]) -> None:
    obj = json.loads(path.read_text())
    change(obj)
    path.write_text(json.dumps(obj))


# ------------------------------------------------------------------------------------------ how to provoke
def _missing_dataset_root(c: Ctx):
    return ["collective", *SMOKE, "--set", "data.source='omniglot'", "--data-root", str(c.tmp / "nowhere"),
            "--out", str(c.tmp / "out")]


def _empty_class_folder(c: Ctx):
    support = image_folder(c.tmp / "support", ["alpha", "beta"], 2)
    (support / "gamma").mkdir()
    return ["inherit", "--gene", str(c.built.gene), "--support", str(support), "--out", str(c.tmp / "m")]


def _support_missing(c: Ctx):
    return ["inherit", "--gene", str(c.built.gene), "--support", str(c.tmp / "no_support"), "--out", str(c.tmp / "m")]


def _support_single_class(c: Ctx):
    support = image_folder(c.tmp / "support", ["alpha"], 3)
    return ["inherit", "--gene", str(c.built.gene), "--support", str(support), "--out", str(c.tmp / "m")]


def _not_an_image_in_support(c: Ctx):
    support = image_folder(c.tmp / "support", ["alpha", "beta"], 2)
    (support / "alpha" / "notes.png").write_text("this is text, not a PNG")
    return ["inherit", "--gene", str(c.built.gene), "--support", str(support), "--out", str(c.tmp / "m")]


def _query_class_not_in_support(c: Ctx):
    query = image_folder(c.tmp / "query", ["alpha", "delta"], 2, seed=1)
    return ["inherit", "--gene", str(c.built.gene), "--support", str(c.built.support), "--query", str(query),
            "--out", str(c.tmp / "m"), "--preset", "smoke"]


def _evaluate(c: Ctx, setting: str):
    return ["evaluate", "--run", str(c.built.collective), "--gene", str(c.built.gene), "--out", str(c.tmp / "e"),
            "--quiet", "--set", f"evaluate.settings=['{setting}']", "--set", f"evaluate.headline='{setting}'"]


def _overlapping_splits(c: Ctx):
    from learngene.data import ClassSplit

    return Api(DataError, lambda: ClassSplit(source=("a", "b"), open_world=(), novel=("b", "c")))


def _collective(c: Ctx, *extra: str):
    return ["collective", *SMOKE, *extra, "--out", str(c.tmp / "out"), "--quiet"]


def _run_infeasible_setting(c: Ctx):
    return ["run", *SMOKE, "--out", str(c.tmp / "out"), "--quiet", "--set", "evaluate.settings=['5way20shot']",
            "--set", "evaluate.headline='5way20shot'"]


def _gene_before_channel_mismatch(c: Ctx):
    from learngene.config import IndividualConfig
    from learngene.gene import Learngene
    from learngene.individual import build_individual
    from learngene.models.io import load_network

    network, meta = load_network(c.built.collective / "model")
    gene = Learngene.from_model(network, ["features.1"], input_spec=meta["input_spec"])  # sits inside: needs fresh layers first
    spec = IndividualConfig(before=[gene.in_channels + 3], adapt=False)
    return Api(ModelError, lambda: build_individual(gene, spec, 5))


def _gene_layers_do_not_chain(c: Ctx):
    from learngene.gene import Learngene

    layers = [
        {"name": "features.0", "type": "conv_block", "in_channels": 1, "out_channels": 8, "pool": False, "params": 96},
        {"name": "features.1", "type": "conv_block", "in_channels": 6, "out_channels": 8, "pool": True, "params": 464},
    ]
    spec = {"image_size": 16, "channels": 1, "mean": [0.5], "std": [0.25], "spatial_in": 16}
    return Api(GeneError, lambda: Learngene(layers, {}, input_spec=spec))


def _gene_manifest_shape_mismatch(c: Ctx):
    gene = c.gene_copy()
    edit_json(gene / "learngene.json", lambda m: m["layers"][0].update(in_channels=7))
    return ["inspect", str(gene)]


def _gene_manifest_edited_image_size(c: Ctx):
    gene = c.gene_copy()  # the tensors still fit a 32x32 input: only the field checksum notices
    edit_json(gene / "learngene.json", lambda m: m["input_spec"].update(image_size=2 * m["input_spec"]["image_size"]))
    return ["inherit", "--gene", str(gene), "--support", str(c.built.support), "--out", str(c.tmp / "m")]


def _gene_manifest_edited_pool(c: Ctx):
    gene = c.gene_copy()
    edit_json(gene / "learngene.json", lambda m: m["layers"][-1].update(pool=not m["layers"][-1]["pool"]))
    return ["inspect", str(gene)]


def _gene_manifest_checksums_removed(c: Ctx):
    gene = c.gene_copy()
    edit_json(gene / "learngene.json", lambda m: m.pop("fields_sha256"))
    return ["inspect", str(gene)]


def _gene_incompatible_version(c: Ctx):
    gene = c.gene_copy()
    edit_json(gene / "learngene.json", lambda m: m.update(version="99.0.0"))
    return ["inspect", str(gene)]


def _tampered_gene(c: Ctx):
    gene = c.gene_copy()
    flip_byte(gene / "model.safetensors", at=0.9)
    return ["inherit", "--gene", str(gene), "--support", str(c.built.support), "--out", str(c.tmp / "m")]


def _foreign_file_as_gene(c: Ctx):
    foreign = c.tmp / "weights.pt"
    foreign.write_bytes(b"\x80\x04not a learngene")
    return ["inherit", "--gene", str(foreign), "--support", str(c.built.support), "--out", str(c.tmp / "m")]


def _foreign_manifest_as_gene(c: Ctx):
    d = c.tmp / "other"
    d.mkdir()
    (d / "learngene.json").write_text(json.dumps({"format": "onnx", "version": "1.0"}))
    return ["inspect", str(d)]


def _run_dir_as_gene(c: Ctx):
    return ["evaluate", "--run", str(c.built.collective), "--gene", str(c.built.collective), "--out",
            str(c.tmp / "e"), "--quiet"]


def _unwritable_output_dir(c: Ctx):
    (c.tmp / "a_file").write_text("x")
    return ["run", *SMOKE, "--out", str(c.tmp / "a_file" / "out"), "--quiet"]


def _read_only(c: Ctx) -> Path:
    """An existing, empty folder on a (simulated) read-only filesystem: creating any file in it fails EROFS."""
    import errno
    import os
    import tempfile

    ro = c.tmp / "ro"
    ro.mkdir()
    real_open, real_mkstemp = os.open, tempfile.mkstemp

    def refuse(where) -> None:
        if Path(where).resolve().is_relative_to(ro.resolve()):
            raise OSError(errno.EROFS, "Read-only file system", str(where))

    def fake_open(path, flags, *args, **kwargs):
        if flags & os.O_CREAT:
            refuse(path)
        return real_open(path, flags, *args, **kwargs)

    def fake_mkstemp(*args, dir=None, **kwargs):
        refuse(dir or ".")
        return real_mkstemp(*args, dir=dir, **kwargs)

    c.mp.setattr(os, "open", fake_open)
    c.mp.setattr(tempfile, "mkstemp", fake_mkstemp)
    return ro


def _without_timm(c: Ctx) -> list[str]:
    """As installed by the README's CPU-only command: timm (and torchvision) absent."""
    import sys

    for name in [n for n in sys.modules if n == "timm" or n.startswith("timm.")] or ["timm"]:
        c.mp.setitem(sys.modules, name, None)
    return ["run", "--preset", "vit-smoke", "--out", str(c.tmp / "v"), "--quiet", "--device", "cpu"]


def _output_not_empty(c: Ctx):
    (c.tmp / "out").mkdir()
    (c.tmp / "out" / "old.txt").write_text("x")
    return ["run", *SMOKE, "--out", str(c.tmp / "out"), "--quiet"]


def _tune_output_not_empty(c: Ctx):
    (c.tmp / "t" / "trials").mkdir(parents=True)
    (c.tmp / "t" / "tune.md").write_text("an earlier tuning")
    return ["tune", *SMOKE, "--param", "train.epochs=1,3", "--out", str(c.tmp / "t"), "--quiet"]


def _inherit_output_not_empty(c: Ctx):
    (c.tmp / "m").mkdir()
    (c.tmp / "m" / "old.txt").write_text("x")
    return ["inherit", "--gene", str(c.built.gene), "--support", str(c.built.support), "--out", str(c.tmp / "m")]


def _inherit_over_gene(c: Ctx):
    gene = c.gene_copy()
    return ["inherit", "--gene", str(gene), "--support", str(c.built.support), "--out", str(gene), "--overwrite"]


def _select_into_collective(c: Ctx):
    coll = c.collective_copy()
    return ["select", "--run", str(coll), "--out", str(coll), "--overwrite"]


def _select_into_run_gene(c: Ctx):
    run = c.copy(c.built.run, "run")
    return ["select", "--run", str(run / "collective"), "--out", str(run / "gene"), "--overwrite"]


def _select_twice(c: Ctx):
    args = ["select", "--run", str(c.built.collective), "--out", str(c.tmp / "g")]
    assert main(args) == 0
    return args


def _cuda_without_cuda(c: Ctx):
    if torch.cuda.is_available():
        pytest.skip("CUDA is present on this machine")
    return ["collective", *SMOKE, "--device", "cuda", "--out", str(c.tmp / "out")]


def _resume_no_checkpoint(c: Ctx):
    (c.tmp / "out").mkdir()
    return ["collective", *SMOKE, "--out", str(c.tmp / "out"), "--resume", "--quiet"]


def _resume_different_config(c: Ctx):
    run = c.collective_copy()
    return ["collective", *SMOKE, "--set", "train.epochs=3", "--out", str(run), "--resume", "--quiet"]


def _run_resume(c: Ctx, *options: str):
    run = c.copy(c.built.run, "run")
    return ["run", *options, "--out", str(run), "--resume", "--quiet", "--device", "cpu"]


def _second_run_into_one_out(c: Ctx):
    import os
    import socket

    out = c.tmp / "busy"
    out.mkdir()
    # a live run holds the directory: this very process, on this host
    (out / ".learngene.lock").write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                                      "started": "2026-01-01T00:00:00+00:00"}))
    return ["collective", *SMOKE, "--out", str(out), "--overwrite", "--quiet"]


def _corrupt_checkpoint(c: Ctx):
    run = c.collective_copy()
    pointer = json.loads((run / "checkpoints" / "latest.json").read_text())
    flip_byte(run / "checkpoints" / pointer["file"])
    return ["collective", *SMOKE, "--out", str(run), "--resume", "--quiet", "--device", "cpu"]


def _malformed_toml(c: Ctx):
    (c.tmp / "bad.toml").write_text("[train\nepochs = 3\n")
    return ["collective", "--config", str(c.tmp / "bad.toml"), "--out", str(c.tmp / "out")]


def _config_file_missing(c: Ctx):
    return ["collective", "--config", str(c.tmp / "missing.toml"), "--out", str(c.tmp / "out")]


def _predict_missing_image(c: Ctx):
    return ["predict", "--model", str(c.built.model), str(c.tmp / "photo.png")]


def _predict_dir_not_model(c: Ctx):
    return ["predict", "--model", str(c.built.gene), str(c.built.support)]


def _tampered_model(c: Ctx):
    model = c.copy(c.built.model, "model")
    flip_byte(model / "model.safetensors", at=0.95)  # inside the weights: would silently change predictions
    return ["predict", "--model", str(model), str(c.built.support)]


def _model_manifest_edited(c: Ctx):
    model = c.copy(c.built.model, "model")
    edit_json(model / "model.json", lambda m: m["classes"].pop())  # a class name deleted by hand
    return ["predict", "--model", str(model), str(c.built.support)]


def _model_manifest_edited_preprocessing(c: Ctx):
    model = c.copy(c.built.model, "model")
    edit_json(model / "model.json", lambda m: m["preprocessing"].update(std=[2 * v for v in m["preprocessing"]["std"]]))
    return ["predict", "--model", str(model), str(c.built.support)]


def _network_manifest_edited(c: Ctx):
    coll = c.collective_copy()
    edit_json(coll / "model" / "network.json", lambda m: m["input_spec"].update(mean=[0.0] * len(m["input_spec"]["mean"])))
    return ["select", "--run", str(coll), "--out", str(c.tmp / "g")]


def _evaluate_output_under_file(c: Ctx):
    (c.tmp / "a_file").write_text("x")
    return ["evaluate", "--run", str(c.built.collective), "--gene", str(c.built.gene), "--out",
            str(c.tmp / "a_file" / "e"), "--quiet"]


def _select_on_paradigm_dir(c: Ctx):
    return ["select", "--run", str(c.built.run), "--out", str(c.tmp / "g")]


def _fixed_criterion_unknown_layer(c: Ctx):
    return ["select", "--run", str(c.built.collective), "--out", str(c.tmp / "g"),
            "--set", "criterion.name='fixed'", "--set", "criterion.layers=['features.9']"]


def bilevel_png(path: Path, width: int, height: int) -> Path:
    """A real 1-bit PNG of any size, written row by row: 20000x10000 is ~25 KB on disk and never in memory."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    pixels = zlib.compress(bytes((1 + (width + 7) // 8) * height), 9)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b""))
    return path


def _inherit_from(c: Ctx, support: Path) -> list[str]:
    return ["inherit", "--gene", str(c.built.gene), "--support", str(support), "--out", str(c.tmp / "m")]


def _image_too_large_in_support(c: Ctx):
    support = image_folder(c.tmp / "support", ["alpha", "beta"], 2)
    bilevel_png(support / "beta" / "scan.png", 20000, 10000)
    return _inherit_from(c, support)


def _image_too_large_for_predict(c: Ctx):
    return ["predict", "--model", str(c.built.model), str(bilevel_png(c.tmp / "scan.png", 20000, 10000))]


def _bad_max_image_pixels(c: Ctx):
    from learngene.data.images import load_image

    image = image_folder(c.tmp / "support", ["alpha"], 1) / "alpha" / "0.png"

    def call() -> None:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("LEARNGENE_MAX_IMAGE_PIXELS", "lots")
            load_image(image, 16, 1)

    return Api(ConfigError, call)


def _float_image_out_of_range(c: Ctx):
    image = c.tmp / "depth.tif"
    Image.fromarray(np.linspace(0, 1000, 400, dtype=np.float32).reshape(20, 20)).save(image)
    return ["predict", "--model", str(c.built.model), str(image)]


def _integer_image_32bit(c: Ctx):
    support = image_folder(c.tmp / "support", ["alpha", "beta"], 2)
    Image.fromarray(np.arange(400, dtype=np.int32).reshape(20, 20) * 175).save(support / "alpha" / "counts.tif")
    return _inherit_from(c, support)


def _symlink_loop_in_support(c: Ctx):
    support = image_folder(c.tmp / "support", ["alpha", "beta"], 2)
    (support / "alpha" / "all").symlink_to("..", target_is_directory=True)  # alpha/all/alpha/all/...
    return _inherit_from(c, support)


def _predict_symlink_loop(c: Ctx):
    (c.tmp / "photo.png").symlink_to("photo.png")
    return ["predict", "--model", str(c.built.model), str(c.tmp / "photo.png")]


def _broken_image_symlink_in_support(c: Ctx):
    support = image_folder(c.tmp / "support", ["alpha", "beta"], 2)
    (support / "beta" / "moved.png").symlink_to(c.tmp / "old_place" / "moved.png")
    return _inherit_from(c, support)


def _gene_labelled(c: Ctx, version: str):
    gene = c.gene_copy()
    edit_json(gene / "learngene.json", lambda m: m.update(version=version))
    return ["inspect", str(gene)]


# ------------------------------------------------------------------------------------------ the Python API (issue 19)
def _few_shot(c: Ctx, *, x=None, y=None, ways: int = 3):
    """train_few_shot on the smoke gene's individual model, with one argument spoiled."""
    from learngene.config import IndividualConfig
    from learngene.gene import Learngene
    from learngene.individual import build_individual, train_few_shot

    gene = Learngene.load(c.built.gene)
    size, channels = gene.input_spec["image_size"], gene.input_spec["channels"]
    settings = IndividualConfig(epochs=1)
    model = build_individual(gene, settings, ways, seed=0)
    x = x if x is not None else gene.preprocess(torch.randint(0, 256, (2 * ways, channels, size, size),
                                                              dtype=torch.uint8))
    y = y if y is not None else torch.arange(ways).repeat(2)
    return Api(DataError, lambda: train_few_shot(model, x, y, settings))


def _gray(n: int, size: int = 16, channels: int = 1) -> torch.Tensor:
    return torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8)


def _build_individual_zero_classes(c: Ctx):
    from learngene.config import IndividualConfig
    from learngene.gene import Learngene
    from learngene.individual import build_individual

    gene = Learngene.load(c.built.gene)
    return Api(ModelError, lambda: build_individual(gene, IndividualConfig(), num_classes=0))


def _tiny_imageset(n_classes: int):
    from learngene.data import ImageSet

    return ImageSet(_gray(4 * n_classes, 8), torch.arange(n_classes).repeat_interleave(4),
                    [f"c{i}" for i in range(n_classes)], [f"g{i}" for i in range(n_classes)], "tiny")


def _stream(n_classes: int, **kwargs):
    from learngene.data import TaskStream

    data = _tiny_imageset(n_classes)
    return Api(DataError, lambda: TaskStream.from_dataset(data, **kwargs))


# ------------------------------------------------------------------------------------------ the table
# (id, how to provoke it, the exact key phrase the user sees)
BAD_INPUTS: list[tuple[str, Callable[[Ctx], Any], str]] = [
    # data
    ("missing_dataset_root", _missing_dataset_root,
     "/nowhere does not exist; learngene downloads nothing: get "
     "images_background_small1.zip and images_background_small2.zip from the Omniglot repository "
     "(github.com/brendenlake/omniglot, folder python/)"),
    ("support_folder_missing", _support_missing, "does not exist; expected a folder laid out as"),
    ("empty_class_folder", _empty_class_folder, "is empty: expected image files"),
    ("support_single_class", _support_single_class, "a classifier needs at least 2 classes"),
    ("not_an_image_in_support", _not_an_image_in_support, "cannot read image"),
    ("query_class_not_in_support", _query_class_not_in_support, "that the support folder"),
    ("too_few_images_for_shots", lambda c: _evaluate(c, "5way20shot"), "need 24 images per class; too few in"),
    ("more_ways_than_novel_classes", lambda c: _evaluate(c, "50way1shot"), "asked for 50-way but only"),
    ("stream_ways_exceed_source", lambda c: _collective(c, "--set", "stream.ways=50"),
     "asked for 50 classes per task but the split has only"),
    ("stream_one_novel_class", lambda c: _stream(5, n_tasks=3, ways=2),
     "novel_fraction = 0.25 of 5 classes leaves 1 novel class(es); the individual models' few-shot tasks need at "
     "least 2"),
    ("stream_every_task_same_classes", lambda c: _stream(8, n_tasks=3, ways=6),
     "ways = 6 is every source class, so all 3 tasks would hold the same 6 classes"),
    ("overlapping_splits", _overlapping_splits, "class split overlaps: 1 class(es) in both source and novel: b"),
    ("image_too_large_in_support", _image_too_large_in_support,
     "is 20000x10000 = 200,000,000 pixels, over the limit of 150,000,000 pixels"),
    ("image_too_large_for_predict", _image_too_large_for_predict,
     "shrink the image, or raise the limit, e.g. LEARNGENE_MAX_IMAGE_PIXELS=200000000"),
    ("bad_max_image_pixels", _bad_max_image_pixels, "LEARNGENE_MAX_IMAGE_PIXELS='lots' is not a number of pixels"),
    ("float_image_out_of_range", _float_image_out_of_range,
     "float pixels range from 0 to 1000, but learngene reads float images as intensities in [0, 1]"),
    ("integer_image_32bit", _integer_image_32bit,
     "32-bit integer pixels (values 0 to 69825) have no standard intensity scale"),
    ("symlink_loop_in_support", _symlink_loop_in_support, "alpha/all leads back to"),
    ("predict_symlink_loop", _predict_symlink_loop, "photo.png is a symbolic link that leads back to itself"),
    ("broken_image_symlink_in_support", _broken_image_symlink_in_support, "moved.png points to"),
    # configuration
    ("unknown_preset", lambda c: ["collective", "--preset", "smok", "--out", str(c.tmp / "o")],
     "unknown preset 'smok'"),
    ("no_preset_or_config", lambda c: ["collective", "--out", str(c.tmp / "o")], "give --preset NAME or --config FILE"),
    ("malformed_config_key", lambda c: _collective(c, "--set", "train.epoch=3"),
     "unknown config key 'train.epoch' (did you mean train.epochs?)"),
    ("override_without_equals", lambda c: _collective(c, "--set", "train.epochs"), "must look like section.key=value"),
    ("wrong_config_type", lambda c: _collective(c, "--set", "train.epochs=three"),
     "config key 'train.epochs' must be of type int, got 'three'"),
    ("negative_epochs", lambda c: _collective(c, "--set", "train.epochs=-2"), "train.epochs = -2 must be > 0"),
    ("lr_for_untrained_method", lambda c: _collective(c, "--set", "evaluate.method_lr.joint=0.1"),
     "evaluate.method_lr.joint: 'joint' does not train on the target task"),
    ("vit_without_timm", _without_timm,
     "learngene run: error: the transformer learngenes need timm, which cannot be imported here ("),
    ("collective_with_vit_preset", lambda c: ["collective", "--preset", "vit-smoke", "--out", str(c.tmp / "o")],
     "is a stage of the CNN paradigm but this config has paradigm = 'vit'"),
    ("key_the_paradigm_never_reads", lambda c: ["run", "--preset", "vit-smoke", "--set", "train.epochs=7", "--out",
                                                str(c.tmp / "o")],
     "config key train.epochs is not read by the transformer paradigm (paradigm = 'vit'), which reads"),
    ("inherit_set_key_it_never_reads", lambda c: [*_inherit_from(c, c.built.support), "--set", "train.epochs=3"],
     "config key train.epochs is not read by `learngene inherit` from a CNN learngene, which reads individual.*"),
    ("vit_learngene_seed_repeated", lambda c: ["run", "--preset", "vit-smoke", "--set", "vit.learngene_seeds=[0,0]",
                                               "--out", str(c.tmp / "o")],
     "vit.learngene_seeds = [0, 0] lists a seed twice; list each seed once"),
    ("vit_aux_init_unknown", lambda c: ["run", "--preset", "vit-smoke", "--set", "vit.aux_init='fit'", "--out",
                                        str(c.tmp / "o")],
     "vit.aux_init = 'fit' is not one of random, ancestry"),
    ("one_way_stream", lambda c: _collective(c, "--set", "stream.ways=1"),
     "stream.ways = 1: a task needs at least 2 classes"),
    ("non_finite_config_number", lambda c: _collective(c, "--set", "train.lr=nan"),
     "config key 'train.lr' = nan is not a finite number; give a finite value"),
    ("individual_before_empty", lambda c: _collective(c, "--set", "individual.before=[]"),
     "individual.before = [] leaves no fresh layer before the gene"),
    ("run_infeasible_setting", _run_infeasible_setting, "need 24 images per class; too few in"),
    ("memory_without_loss_over_all_classes", lambda c: _collective(c, "--set", "train.memory_per_class=5"),
     "replays earlier classes, which a loss over the current task's classes cannot score; set train.loss_scope"),
    ("tune_param_without_values", lambda c: ["tune", *SMOKE, "--param", "train.ewc_lambda", "--out", str(c.tmp / "t")],
     "must look like section.key=v1,v2,..."),
    ("tune_bad_value", lambda c: ["tune", *SMOKE, "--param", "train.epochs=1,-2", "--out", str(c.tmp / "t")],
     "train.epochs = -2 must be > 0"),
    ("invalid_evaluation_setting", lambda c: _collective(c, "--set", "evaluate.settings=['5-way']"),
     "is not of the form '<ways>way<shots>shot'"),
    ("headline_not_in_settings", lambda c: _collective(c, "--set", "evaluate.headline='5way5shot'"),
     "must be one of evaluate.settings"),
    ("malformed_toml", _malformed_toml, "is not valid TOML"),
    ("config_file_missing", _config_file_missing, "does not exist; pass an existing .toml file"),
    ("fixed_criterion_unknown_layer", _fixed_criterion_unknown_layer, "that are not conv blocks of the model"),
    # devices
    ("cuda_without_cuda", _cuda_without_cuda, "CUDA is not available on this machine"),
    ("unknown_device", lambda c: _collective(c, "--device", "gpu"), "unknown device 'gpu'"),
    # genes and models
    ("gene_before_channel_mismatch", _gene_before_channel_mismatch, "but the gene expects"),
    ("gene_layers_do_not_chain", _gene_layers_do_not_chain, "gene layers must chain"),
    ("individual_zero_classes", _build_individual_zero_classes,
     "num_classes = 0; a classifier needs at least 2 classes"),
    ("few_shot_uint8_images", lambda c: _few_shot(c, x=_gray(6)),
     "support images are uint8 pixels, but the model takes normalized float images; pass gene.preprocess(images)"),
    ("few_shot_wrong_image_size", lambda c: _few_shot(c, x=_gray(6, 28).float()),
     "support images are 28x28 but the model takes 16x16; resize them first"),
    ("few_shot_wrong_channels", lambda c: _few_shot(c, x=_gray(6, channels=3).float()),
     "support images have 3 channel(s) but the model takes 1; convert the images first"),
    ("few_shot_labels_count_mismatch", lambda c: _few_shot(c, y=torch.arange(3).repeat(2)[:5]),
     "the support set has 6 images but 5 labels; give exactly one label per image"),
    ("few_shot_label_out_of_range", lambda c: _few_shot(c, y=torch.tensor([0, 1, 2, 3, 0, 1])),
     "the support set labels range over 0..3 but the model has 3 outputs (classes 0..2)"),
    ("gene_manifest_shape_mismatch", _gene_manifest_shape_mismatch,
     "learngene.json was edited after learngene wrote it: 'layers' differs (checked by fields_sha256)"),
    ("gene_manifest_edited_image_size", _gene_manifest_edited_image_size,
     "learngene.json was edited after learngene wrote it: 'input_spec' differs (checked by fields_sha256); an edited "
     "manifest would make learngene use the tensors otherwise than they were made for"),
    ("gene_manifest_edited_pool", _gene_manifest_edited_pool, "was edited after learngene wrote it: 'layers' differs"),
    ("gene_manifest_checksums_removed", _gene_manifest_checksums_removed,
     "has no 'fields_sha256', which every learngene written by learngene 0.2 or later records"),
    ("gene_incompatible_version", _gene_incompatible_version, "made by learngene 99.0.0"),
    ("gene_newer_version", lambda c: _gene_labelled(c, "0.3.0"),
     "incompatible format, written by a newer learngene; upgrade learngene to 0.3 or later"),
    ("gene_older_version", lambda c: _gene_labelled(c, "0.0.9"),
     "incompatible format, written by an older learngene"),
    ("gene_malformed_version", lambda c: _gene_labelled(c, "0.1"),
     "'version' '0.1' is not a release number MAJOR.MINOR.PATCH"),
    ("tampered_gene", _tampered_gene, "tampered: sha256 mismatch"),
    ("foreign_file_as_gene", _foreign_file_as_gene, "not a learngene"),
    ("foreign_manifest_as_gene", _foreign_manifest_as_gene, "has format 'onnx', expected 'learngene/v1'"),
    ("run_dir_as_gene", _run_dir_as_gene, "not a learngene (no learngene.json in"),
    ("inspect_run_dir", lambda c: ["inspect", str(c.built.run)],
     "holds a run, not a learngene; its learngene is"),
    ("predict_dir_not_model", _predict_dir_not_model, "not an individual model (no model.json in"),
    ("predict_missing_image", _predict_missing_image, "does not exist; pass image files or folders of images"),
    ("tampered_model", _tampered_model, "tampered: sha256 mismatch"),
    ("model_manifest_edited", _model_manifest_edited, "model.json was edited after learngene wrote it: 'classes' differs"),
    ("model_manifest_edited_preprocessing", _model_manifest_edited_preprocessing,
     "model.json was edited after learngene wrote it: 'preprocessing' differs"),
    ("network_manifest_edited", _network_manifest_edited,
     "network.json was edited after learngene wrote it: 'input_spec' differs"),
    # output directories, runs and checkpoints
    ("unwritable_output_dir", _unwritable_output_dir, "cannot create output directory"),
    ("read_only_output_dir", lambda c: ["collective", *SMOKE, "--out", str(_read_only(c)), "--quiet"],
     "ro: Read-only file system; choose a location on a writable filesystem"),
    ("run_read_only_output_dir", lambda c: ["run", *SMOKE, "--out", str(_read_only(c)), "--quiet"],
     "ro: Read-only file system; choose a location on a writable filesystem"),
    ("output_name_too_long", lambda c: [*_inherit_from(c, c.built.support)[:-1], str(c.tmp / ("x" * 300) / "m")],
     "File name too long (at most 255 characters per folder or file name, 4096 for the whole path); choose a "
     "shorter path"),
    ("run_output_path_too_long", lambda c: ["run", *SMOKE, "--quiet", "--out",
                                            str(c.tmp.joinpath(*["d" * 200] * 25))],
     "File name too long (at most 255 characters per folder or file name, 4096 for the whole path)"),
    ("evaluate_output_under_file", _evaluate_output_under_file, "cannot create output directory"),
    ("output_not_empty", _output_not_empty, "is not empty (1 entries); pass --overwrite"),
    ("tune_output_not_empty", _tune_output_not_empty,
     "is not empty (2 entries); pass --overwrite to write into it anyway, --resume to continue a run there"),
    ("inherit_output_not_empty", _inherit_output_not_empty,
     "is not empty (1 entries); pass --overwrite to write into it anyway, or choose an empty directory"),
    ("depth_for_cnn_gene", lambda c: [*_inherit_from(c, c.built.support), "--depth", "4"],
     "--depth builds transformer descendants, but"),
    ("width_for_cnn_gene", lambda c: [*_inherit_from(c, c.built.support), "--width", "48"],
     "--width builds transformer descendants, but"),
    ("width_heads_mismatch", lambda c: ["inherit", "--gene", "glyphs-frequency", "--depth", "2", "--width", "40",
                                        "--heads", "3", "--support", str(c.built.support), "--out", str(c.tmp / "m")],
     "heads must be an integer >= 1 that divides the width 40, got 3"),
    ("make_gene_missing_weights", lambda c: ["make-gene", "--weights", str(c.tmp / "deit.pth"), "--timm",
                                             "deit_tiny_patch16_224", "--out", str(c.tmp / "g")],
     "deit.pth: no such file or directory; give the local path of your model's"),
    ("make_gene_tleg_without_preset", lambda c: ["make-gene", "--weights", str(c.tmp), "--kind", "tleg", "--out",
                                                 str(c.tmp / "g")],
     "--kind tleg distils the templates on a data set's source classes: give --preset"),
    ("missing_gene_with_depth", lambda c: ["inherit", "--gene", str(c.tmp / "DOES-NOT-EXIST"), "--depth", "5",
                                           "--support", str(c.built.support), "--out", str(c.tmp / "m")],
     "DOES-NOT-EXIST: no such file or directory; pass a learngene directory"),
    ("inherit_over_gene", _inherit_over_gene,
     "holds a learngene, not an individual model; learngene never writes one kind of artifact over another"),
    ("select_into_collective_run", _select_into_collective,
     "holds a collective run, not a learngene; learngene never writes one kind of artifact over another"),
    ("select_into_run_gene", _select_into_run_gene, "is part of the run in"),
    ("second_select_same_out", _select_twice, "is not empty (2 entries); pass --overwrite"),
    ("run_over_gene", lambda c: ["run", *SMOKE, "--out", str(c.gene_copy()), "--overwrite"],
     "holds a learngene, not a run"),
    ("resume_no_checkpoint", _resume_no_checkpoint, "--resume given but"),
    ("resume_different_config", _resume_different_config, "was started with a different configuration"),
    ("second_run_into_one_out", _second_run_into_one_out, "is in use by another learngene run (pid"),
    ("run_resume_changed_config", lambda c: _run_resume(c, *SMOKE, "--set", "train.epochs=3"),
     "was started with a different configuration (train.epochs differ)"),
    ("run_resume_other_preset", lambda c: _run_resume(c, "--preset", "default"),
     "was started with a different configuration ("),
    ("corrupt_checkpoint", _corrupt_checkpoint, "fails its checksum"),
    ("select_on_paradigm_dir", _select_on_paradigm_dir, "this looks like the output of `learngene run`"),
    # training
    ("non_finite_loss", lambda c: _collective(c, "--set", "train.lr=1e30"), "at task 1/3, epoch 1, batch"),
]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Built:
    return Built(tmp_path_factory.mktemp("bad_inputs"))


@pytest.mark.parametrize("row_id, provoke, phrase", BAD_INPUTS, ids=[r[0] for r in BAD_INPUTS])
def test_bad_input(row_id, provoke, phrase, built, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative default (../shared/data) must not find real data by accident
    monkeypatch.delenv("LEARNGENE_DEBUG", raising=False)
    how = provoke(Ctx(built, tmp_path, monkeypatch))
    capsys.readouterr()  # drop what building the shared artifacts printed
    if isinstance(how, Api):
        with pytest.raises(how.error) as info:
            how.call()
        assert phrase in str(info.value)
        return
    assert main(how) == 2, how
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"learngene {how[0]}: error: "), err
    assert phrase in lines[0], f"{phrase!r} not in {lines[0]!r}"


def test_table_has_unique_ids():
    ids = [r[0] for r in BAD_INPUTS]
    assert len(ids) == len(set(ids)) and len(ids) >= 24


def test_every_row_is_documented():
    text = DOCS.read_text()
    missing = [r[0] for r in BAD_INPUTS if f"`{r[0]}`" not in text]
    assert not missing, f"rows of tests/test_bad_inputs.py missing from docs/ERRORS.md: {missing}"


def test_infeasible_settings_fail_before_training(tmp_path, capsys):
    """A later stage that cannot run is refused before the collective model trains (issue 11 item 6)."""
    out = tmp_path / "out"
    assert main(_run_infeasible_setting(Ctx(None, tmp_path))) == 2
    assert not (out / "collective" / "checkpoints").exists() and not (out / "collective" / "config.json").exists()


def test_disk_full_while_plotting_keeps_checkpoints_and_resumes(tmp_path, capsys, monkeypatch):
    """ENOSPC while plots are written: one clear line, no partial file, checkpoints kept, --resume finishes."""
    import errno
    import os

    real_fsync = os.fsync

    def full_for_plots(fd):
        if ".png." in os.readlink(f"/proc/self/fd/{fd}"):  # the temporary file of a plot
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    out = tmp_path / "out"
    args = ["run", *SMOKE, "--out", str(out), "--quiet"]
    monkeypatch.setattr(os, "fsync", full_for_plots)
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the disk is full" in err[0] and "--resume" in err[0], err
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    assert not list(out.rglob("*.png"))
    assert (out / "collective" / "checkpoints" / "latest.json").is_file()
    assert not (out / "collective" / "collective.json").exists()  # unfinished: resume completes it
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert main([*args, "--resume"]) == 0
    assert (out / "report.json").is_file() and (out / "collective" / "plots" / "forgetting_curve.png").is_file()


@pytest.mark.parametrize("fmt", [[], ["--json"]], ids=["text", "json"])
def test_predict_into_a_closed_pipe_stops_quietly(built, tmp_path, fmt):
    """`learngene predict ... | head -1` (issue 19 item 3): the reader goes away; no BrokenPipeError traceback."""
    import os
    import subprocess
    import sys

    src = Path(__file__).resolve().parents[1] / "src"
    env = {**os.environ, "PYTHONPATH": str(src)}
    env.pop("LEARNGENE_DEBUG", None)
    proc = subprocess.Popen([sys.executable, "-m", "learngene", "predict", "--model", str(built.model),
                             str(built.support), *fmt], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    proc.stdout.close()  # the reader is gone before anything is written
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err
