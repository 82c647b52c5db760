"""A gene's input contract applied to a user's files: read them as the training data was read, and say so when
they still look unlike it.

A model only knows the tensors it was trained on. The Omniglot source inverts its black-ink-on-white files into
bright strokes on black; a gene trained on that and fed the raw files sees a negative and scores far below what
it knows. So an input spec records how files became tensors (``invert``, ``resize``) beside the normalization
(``mean``, ``std``), every reader of user files (``inherit``, ``predict``, the transformer path) goes through
:func:`read_folder` / :func:`read_files`, and :func:`statistics_warning` names the likely cause and the fix when a
user's images still sit far from the recorded statistics.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from learngene.data.images import ImageSet, check_preprocessing, load_image, read_image_folder

__all__ = ["file_settings", "read_files", "read_folder", "statistics_warning", "STATS_WARN_Z"]

log = logging.getLogger(__name__)

# a user's images whose per-channel mean lies more than this many of the gene's standard deviations from the
# gene's recorded mean are reported (raw Omniglot PNGs against the omniglot gene: about 3.4; the same files read
# by the contract: about 0.05)
STATS_WARN_Z = 1.0


def file_settings(spec: Mapping[str, Any], invert: bool | str | None = None, resize: str | None = None) -> dict[str, Any]:
    """The file reading that ``spec`` records, with the user's overrides (None keeps the recorded value)."""
    recorded = check_preprocessing({k: spec[k] for k in ("invert", "resize") if k in spec}, "input_spec")
    chosen = {"invert": recorded["invert"] if invert is None else invert,
              "resize": recorded["resize"] if resize is None else resize}
    return check_preprocessing(chosen, "file reading")


def read_folder(folder: str | Path, spec: Mapping[str, Any], *, invert: bool | str | None = None,
                resize: str | None = None) -> ImageSet:
    """An ImageFolder tree read as ``spec`` says (size, channels, inversion, resize mode)."""
    how = file_settings(spec, invert, resize)
    return read_image_folder(folder, image_size=int(spec["image_size"]), channels=int(spec["channels"]),
                             invert=how["invert"], resize=how["resize"])


def read_files(paths: Sequence[str | Path], spec: Mapping[str, Any], *, invert: bool | str | None = None,
               resize: str | None = None) -> torch.Tensor:
    """Image files as uint8 ``[N, C, S, S]``, read as ``spec`` says."""
    how = file_settings(spec, invert, resize)
    return torch.stack([load_image(p, int(spec["image_size"]), int(spec["channels"]), invert=how["invert"],
                                   resize=how["resize"]) for p in paths])


def _flag(value: bool | str) -> str:
    return "auto" if value == "auto" else ("true" if value else "false")


def statistics_warning(images: torch.Tensor, spec: Mapping[str, Any], *, invert_used: bool | str,
                       what: str = "the support images") -> str | None:
    """One line when ``images`` (uint8, as read) are far from the statistics the model was trained on.

    Why: a wrong polarity or another kind of image is silent otherwise; the model just scores badly. The line
    gives both means, the likely cause, and the option that fixes it (``--invert``; ``invert=`` in Python).
    """
    if images.numel() == 0:
        return None
    x = images.float().div_(255)
    got = x.mean(dim=(0, 2, 3)).tolist()
    mean, std = list(spec["mean"]), list(spec["std"])
    if len(mean) != len(got):
        return None
    z = max(abs(g - m) / max(s, 1e-3) for g, m, s in zip(got, mean, std))
    if z <= STATS_WARN_Z:
        return None
    flipped = max(abs((1 - g) - m) / max(s, 1e-3) for g, m, s in zip(got, mean, std))
    shown = ", ".join(f"{v:.2f}" for v in got)
    trained = ", ".join(f"{v:.2f}" for v in mean)
    head = (f"{what} have mean intensity {shown} but the model was trained on images of mean {trained} "
            f"({z:.1f} standard deviations away)")
    if flipped < z / 2:
        other = "false" if invert_used is True else "true"
        return (f"{head}: they look inverted (dark on light where the model saw light on dark, or the reverse; "
                f"read with invert={_flag(invert_used)}); pass --invert {other} (Python: invert={other.title()}) "
                "to read them the way the model was trained")
    return (f"{head}: they may be another kind of image (other colours, background or exposure); results may be "
            "poor. Check the gene's input contract with `learngene inspect`, and --invert auto / --resize pad")


def warn_if_unlike(images: torch.Tensor, spec: Mapping[str, Any], *, invert_used: bool | str,
                   what: str = "the support images") -> str | None:
    """:func:`statistics_warning`, logged as a warning (once per call) and returned."""
    message = statistics_warning(images, spec, invert_used=invert_used, what=what)
    if message:
        log.warning(message)
    return message
