"""Classify images with a trained individual model: the library call behind ``learngene predict``.

``predict(model, images)`` takes a model directory (written by ``learngene inherit`` or
:func:`~learngene.individual.save_individual`) or an ``nn.Module``, and image files, folders, or a tensor. The
images go through the model's own preprocessing (size, channels, normalization from its manifest), so a
prediction from Python and from the command line are the same numbers.

The score of each answer is the top softmax output. It is **not** a calibrated probability: a model trained on a
few images per class is typically over-confident (wrong answers at 0.999 are common), so
:func:`~learngene.stats.calibration` measures how far scores and accuracy differ on labelled images (the expected
calibration error).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from learngene.errors import DataError, ModelError
from learngene.models.inputs import check_images
from learngene.stats import softmax_scores

__all__ = ["SCORE_NOTE", "predict"]

#: One sentence for every place that shows prediction scores.
SCORE_NOTE = ("scores are softmax outputs, not calibrated probabilities: a few-shot model is often over-confident "
              "(wrong answers can score 0.999)")


def _paths(images: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[Path]:
    """The image files given (files, or folders searched by the one discovery rule of every command)."""
    from learngene.data.images import IMAGE_EXTENSIONS, find_images

    items = [images] if isinstance(images, (str, os.PathLike)) else list(images)
    paths = [p for item in items for p in find_images(item)]
    if not paths:
        raise DataError(f"no images found in {[str(i) for i in items]} (looked for {', '.join(IMAGE_EXTENSIONS)})")
    return paths


def _read(paths: Sequence[Path], pre: Mapping[str, Any], invert: bool | str | None, resize: str | None) -> Tensor:
    """Image files -> the model's normalized float input, read by the model's input contract (size, channels,
    inversion, resize mode; ``invert``/``resize`` override it) and normalized with its statistics."""
    from learngene.data.contract import read_files
    from learngene.data.transforms import normalize

    return normalize(read_files(paths, pre, invert=invert, resize=resize), pre["mean"], pre["std"])


def _load(model: nn.Module | str | os.PathLike[str], classes: Sequence[str] | None,
          preprocessing: Mapping[str, Any] | None) -> tuple[nn.Module, list[str] | None, Mapping[str, Any] | None]:
    if isinstance(model, nn.Module):
        return model, (list(classes) if classes is not None else None), preprocessing
    if not isinstance(model, (str, os.PathLike)):
        raise ModelError(f"predict: model must be a model directory or an nn.Module, got {type(model).__name__}")
    from learngene.individual import load_individual

    net, meta = load_individual(model)
    return net, list(classes) if classes is not None else meta["classes"], preprocessing or meta["preprocessing"]


def predict(model: nn.Module | str | os.PathLike[str],
            images: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | Tensor, *,
            classes: Sequence[str] | None = None, preprocessing: Mapping[str, Any] | None = None,
            invert: bool | str | None = None, resize: str | None = None, batch_size: int = 64) -> list[dict[str, Any]]:
    """One row per image: ``{"image", "class", "label", "score"}``, in the order the images were given.

    ``model``: a model directory (its class names and preprocessing come from its ``model.json``) or an
    ``nn.Module`` (give ``classes`` to name its outputs, and ``preprocessing``, a gene's ``input_spec``, to read
    files or uint8 pixels). ``images``: an image file or folder, a list of them, or a tensor ``[N, C, H, W]``
    (uint8 pixels are normalized with ``preprocessing``; float images are taken as already normalized, e.g.
    ``gene.preprocess(pixels)``). Files are read by the model's input contract; ``invert`` (True, False,
    "auto") and ``resize`` ("crop", "pad", "stretch") override it, as ``--invert``/``--resize`` do. ``score`` is
    the top softmax output: see :data:`SCORE_NOTE`.
    """
    net, names, pre = _load(model, classes, preprocessing)
    if isinstance(images, Tensor):
        where: list[Any] = list(range(len(images)))
        x = images
        if not x.is_floating_point():
            if pre is None:
                raise DataError("predict: uint8 images need preprocessing= (the gene's input_spec: image_size, "
                                "channels, mean, std) to be normalized; or pass gene.preprocess(images)")
            from learngene.data.transforms import normalize

            x = normalize(x, pre["mean"], pre["std"])
    else:
        paths = _paths(images)
        if pre is None:
            raise DataError("predict: reading image files needs preprocessing= (the gene's input_spec: image_size, "
                            "channels, mean, std), or pass the model's directory, whose model.json records it")
        where = [str(p) for p in paths]
        x = torch.cat([_read(paths[i : i + batch_size], pre, invert, resize) for i in range(0, len(paths), batch_size)])
    check_images(net, x, "images", where="predict")
    device = next((p.device for p in net.parameters()), torch.device("cpu"))
    probs = softmax_scores(net, x.to(device), batch_size).cpu()
    if names is not None and len(names) != probs.shape[1]:
        raise ModelError(f"predict: {len(names)} class names for a model with {probs.shape[1]} outputs")
    top, label = probs.max(1)
    return [{"image": w, "class": names[k] if names is not None else k, "label": k, "score": float(s)}
            for w, k, s in zip(where, label.tolist(), top.tolist())]


def _layers(specs: Sequence[Mapping[str, Any]]) -> str:
    return ", ".join(f"{s['in_channels']}->{s['out_channels']}{' pool' if s.get('pool') else ''}" for s in specs) or "-"


def describe_model(directory: str | os.PathLike[str]) -> str:
    """A readable summary of a saved individual model for ``learngene inspect``: classes, input, layers, where
    its learngene came from and how it did on its query folder."""
    from learngene.individual import load_individual

    model, meta = load_individual(directory)
    arch, pre, classes = meta["architecture"], meta["preprocessing"], meta["classes"]
    params = sum(p.numel() for p in model.parameters())
    shown = ", ".join(classes[:12]) + (f", ... ({len(classes)} in all)" if len(classes) > 12 else "")
    lines = [f"individual model ({meta['format']}, made by learngene {meta['version']})",
             f"{len(classes)} classes: {shown}",
             f"input: {pre['image_size']}x{pre['image_size']}, {pre['channels']} channel(s), mean "
             f"{[round(v, 4) for v in pre['mean']]}, std {[round(v, 4) for v in pre['std']]}"]
    if arch.get("name") == "individual":
        hidden = f"hidden {arch['hidden']} | " if arch["hidden"] else ""
        lines.append(f"layers: fresh {_layers(arch['before'])} | inherited {_layers(arch['gene'])} | fresh "
                     f"{_layers(arch['after'])} | {hidden}classifier -> {arch['num_classes']} classes")
    else:  # a transformer descendant
        lines.append(f"architecture: {arch.get('name')} (depth {meta.get('depth', arch.get('depth'))}, width "
                     f"{arch.get('embed_dim')}, patch {arch.get('patch_size')})")
    inherited = meta.get("inherited_params")
    lines.append(f"parameters: {params:,}" + (f", {inherited:,} of them inherited" if isinstance(inherited, int) else ""))
    gene = meta.get("gene") or {}
    if gene:
        origin = (gene.get("provenance") or {}).get("collective_run") or gene.get("dir")
        what = ", ".join(gene["layers"]) if gene.get("layers") else gene.get("kind", "?")
        lines.append(f"learngene: {what}" + (f" (from {origin})" if origin else ""))
    support = meta.get("support") or {}
    if support:
        lines.append(f"trained on {support.get('images')} support images from {support.get('dir')}")
    acc, cal = meta.get("query_accuracy"), meta.get("query_calibration")
    if acc is not None:
        lines.append(f"query accuracy {acc:.3f}" + (f"; mean top score {cal['mean_score']:.3f}, calibration error "
                                                    f"(ECE) {cal['ece']:.3f}" if cal else ""))
    lines.append(f"note: {SCORE_NOTE}")
    return "\n".join(lines)
