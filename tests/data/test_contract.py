"""The gene's input contract: a user's raw files are read the way the training data was (issue 16)."""

import logging
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from learngene.baselines import ncm_accuracy
from learngene.data import load_source
from learngene.data.contract import file_settings, read_files, statistics_warning
from learngene.data.images import check_preprocessing, crop_loss, load_image, read_image_folder
from learngene.errors import DataError, GeneError
from learngene.gene import Learngene
from learngene.individual import read_support_query
from learngene.models import create_model


def _paper_drawings(root, classes=4, per_class=4, size=24, seed=0):
    """Omniglot-style files: dark strokes on white paper, one folder per class. Each class is a fixed stroke
    pattern, each drawing a jittered copy of it."""
    rng = np.random.default_rng(seed)
    for c in range(classes):
        base = rng.random((size, size)) < 0.12
        for i in range(per_class):
            ink = np.roll(base, rng.integers(-1, 2, size=2), axis=(0, 1)) | (rng.random((size, size)) < 0.02)
            img = np.where(ink, 10, 245).astype(np.uint8)
            (root / f"c{c}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(root / f"c{c}" / f"{i}.png")
    return root


def _gene_trained_on(data, seed=0):
    """A gene (the first two blocks of a small network) whose input spec is that of ``data``."""
    torch.manual_seed(seed)
    net = create_model("test_vgg", in_channels=1, image_size=data.image_size, num_classes=3).eval()
    return Learngene.from_model(net, ["features.0", "features.1"], input_spec=data.input_spec()), net


def test_a_source_that_inverts_its_files_records_it_and_the_gene_keeps_it(tmp_path):
    data = read_image_folder(_paper_drawings(tmp_path / "src"), 16, 1, invert=True)
    spec = data.input_spec()
    assert spec["invert"] is True and spec["resize"] == "crop"
    assert spec["mean"][0] < 0.3  # bright strokes on black, as trained
    gene, _ = _gene_trained_on(data)
    gene.save(tmp_path / "gene")
    assert Learngene.load(tmp_path / "gene").input_spec["invert"] is True


def test_raw_files_through_inherit_equal_the_tensors_the_gene_was_trained_on(tmp_path):
    """The contract end to end: raw white-background files read for ``inherit`` are bit-identical to the source
    loader's tensors, so a gene scores the same on them; without the contract it sees a negative."""
    root = _paper_drawings(tmp_path / "drawings", classes=5, per_class=4)
    source = load_source("imagefolder", root=root, image_size=16, channels=1, invert=True, cache=False)
    gene, net = _gene_trained_on(source)
    spec = gene.input_spec
    classes, x, y, _, _ = read_support_query(root, None, spec)
    from learngene.data.transforms import normalize

    trained = normalize(source.images, spec["mean"], spec["std"])
    assert classes == source.classes
    assert torch.equal(x, trained)
    # the same files with the contract switched off are the negative of what the gene saw
    _, x_raw, _, _, _ = read_support_query(root, None, spec, invert=False)
    assert not torch.allclose(x_raw, trained)

    def features(t):
        with torch.no_grad():
            return net.features[:2](t).flatten(1)

    support = torch.arange(len(y)) % 4 == 0  # one drawing per class as support, the rest as queries
    yy = source.labels
    on_training_tensors = ncm_accuracy(features, trained[support], yy[support], trained[~support], yy[~support])
    on_raw_files = ncm_accuracy(features, x[support], y[support], x[~support], y[~support])
    assert on_raw_files == on_training_tensors


def test_statistics_warning_names_inverted_polarity_and_the_fix(tmp_path, caplog):
    root = _paper_drawings(tmp_path / "drawings")
    data = read_image_folder(root, 16, 1, invert=True)
    spec = data.input_spec()
    assert statistics_warning(data.images, spec, invert_used=True) is None
    raw = read_image_folder(root, 16, 1, invert=False)
    message = statistics_warning(raw.images, spec, invert_used=False)
    assert message is not None
    assert "inverted" in message and "--invert true" in message
    # through read_support_query, as inherit reads: logged once and handed back
    notes: list[str] = []
    with caplog.at_level(logging.WARNING):
        read_support_query(root, None, spec, invert=False, warnings=notes)
    assert len(notes) == 1 and "--invert true" in notes[0]
    assert any("--invert true" in r.getMessage() for r in caplog.records)
    notes.clear()
    read_support_query(root, None, spec, warnings=notes)  # the contract's own reading: nothing to say
    assert notes == []


def test_statistics_warning_for_images_unlike_the_training_data_without_inversion():
    spec = {"image_size": 8, "channels": 1, "mean": [0.1], "std": [0.1]}
    gray = torch.full((4, 1, 8, 8), 128, dtype=torch.uint8)  # mean 0.5: far, but 1 - 0.5 is as far
    message = statistics_warning(gray, spec, invert_used=False)
    assert message is not None and "inverted" not in message and "another kind of image" in message


def test_glyph_genes_invert_dark_on_light_files_automatically(tmp_path):
    glyphs = load_source("glyphs", image_size=16, per_class=2, max_classes=4)
    assert glyphs.preprocessing == {"invert": "auto", "resize": "crop"}
    # a file of dark ink on white paper and the same drawing as bright ink on black read alike
    arr = np.full((16, 16), 250, np.uint8)
    arr[4:12, 7:9] = 5
    Image.fromarray(arr).save(tmp_path / "paper.png")
    Image.fromarray(255 - arr).save(tmp_path / "screen.png")
    spec = glyphs.input_spec()
    a, b = read_files([tmp_path / "paper.png", tmp_path / "screen.png"], spec)
    assert torch.equal(a, b) and int(a[0, 0, 0]) < 10


def test_old_specs_without_the_contract_read_as_before_and_bad_values_are_refused():
    old = {"image_size": 8, "channels": 1, "mean": [0.5], "std": [0.2]}
    assert file_settings(old) == {"invert": False, "resize": "crop"}
    assert file_settings({**old, "invert": True}, invert="auto")["invert"] == "auto"
    with pytest.raises(DataError, match="invert"):
        file_settings(old, invert="yes")
    with pytest.raises(DataError, match="resize"):
        check_preprocessing({"resize": "squash"})
    from learngene.gene_format import validate_file_contract

    with pytest.raises(GeneError, match="invert"):
        validate_file_contract({**old, "invert": 1}, GeneError)


def test_odd_shaped_images_warn_once_and_pad_keeps_them_whole(tmp_path, caplog):
    wide = np.full((30, 120), 255, np.uint8)
    wide[5:25, 2:22] = 0  # a mark near the left edge: a centre crop cuts it off
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    Image.fromarray(wide).save(tmp_path / "a" / "wide.png")
    Image.fromarray(np.full((16, 16), 255, np.uint8)).save(tmp_path / "b" / "square.png")
    assert crop_loss(120, 30) == pytest.approx(0.75)
    with caplog.at_level(logging.WARNING):
        cropped = read_image_folder(tmp_path, 16, 1)
    warnings = [r.getMessage() for r in caplog.records if "not square" in r.getMessage()]
    assert len(warnings) == 1 and "1 of 2 images" in warnings[0] and "75%" in warnings[0]
    assert "resize='pad'" in warnings[0]
    assert int(cropped.images[0].min()) == 255  # the mark is gone
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        padded = read_image_folder(tmp_path, 16, 1, resize="pad")
    assert not [r for r in caplog.records if "not square" in r.getMessage()]
    assert padded.preprocessing["resize"] == "pad"
    assert int(padded.images[0].min()) < 128  # the mark is kept
    assert int(padded.images[0, 0, 0, 8]) == 255  # padded with the white border, not black
    stretched = load_image(tmp_path / "a" / "wide.png", 16, 1, resize="stretch")
    assert int(stretched.min()) < 128


@pytest.mark.needs_data
def test_raw_omniglot_pngs_read_by_the_contract_match_the_omniglot_source(omniglot_root, tmp_path):
    """The real case of the issue: the official black-on-white PNGs, read through the omniglot gene's contract,
    are the source's training tensors (up to the resampler's rounding)."""
    data = load_source("omniglot", root=omniglot_root, image_size=28)
    spec = data.input_spec()
    assert spec["invert"] is True
    with zipfile.ZipFile(omniglot_root / "images_background_small1.zip") as zf:
        members = sorted(n for n in zf.namelist() if n.endswith(".png") and "/Greek/character01/" in n)[:5]
        paths = []
        for n in members:
            target = tmp_path / n.rsplit("/", 1)[-1]
            target.write_bytes(zf.read(n))
            paths.append(target)
    cls = "Greek/character01"
    ours = data.images[data.indices_of(cls)][:5].float()
    read = read_files(paths, spec).float()
    assert (read - ours).abs().mean() < 4.0  # of 255: the same drawings, the same polarity
    raw = read_files(paths, spec, invert=False).float()
    assert (raw - ours).abs().mean() > 100.0
    assert statistics_warning(read_files(paths, spec, invert=False), spec, invert_used=False) is not None
