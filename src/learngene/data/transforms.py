"""Tensor-side transforms: normalization, per-sample batched augmentation, and loading a user's image file.

torchvision.transforms.v2 draws ONE set of random parameters per call, so applied to a batch every image
gets the same crop/flip. Training on small data needs independent parameters per sample, so the
augmentations here draw a parameter vector per sample and apply it with one vectorized op (gather for
crops, one affine_grid/grid_sample for affine), on whatever device the batch lives.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from learngene.errors import ConfigError, DataError

__all__ = ["AUGMENT_KINDS", "BatchAugment", "load_rgb_or_gray", "normalize", "to_float"]

AUGMENT_KINDS = ("none", "flip_crop", "affine")


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [0, 1]; float input is taken to be on [0, 1] already."""
    if images.dtype == torch.uint8:
        return images.to(torch.float32).div_(255.0)
    if not images.is_floating_point():
        raise DataError(f"expected uint8 or float images, got {images.dtype}")
    return images.to(torch.float32)


def normalize(images_uint8: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(x/255 - mean) / std per channel, float32, on the tensor's own device (no host round trip)."""
    x = to_float(images_uint8)
    c = x.shape[-3]
    mean_t = torch.as_tensor(mean, dtype=torch.float32, device=x.device).reshape(-1)
    std_t = torch.as_tensor(std, dtype=torch.float32, device=x.device).reshape(-1)
    if mean_t.numel() not in (1, c) or std_t.numel() not in (1, c):
        raise DataError(
            f"normalize: images have {c} channels but mean has {mean_t.numel()} and std {std_t.numel()} values"
        )
    if bool((std_t <= 0).any()):
        raise DataError(f"normalize: std must be positive, got {std_t.tolist()}")
    shape = (-1, 1, 1)
    return (x - mean_t.view(shape)) / std_t.view(shape)


class BatchAugment:
    """Random augmentation with independent parameters per sample, applied to a whole batch at once.

    kind:
      "none"      identity;
      "flip_crop" natural images: zero-pad by `padding`, random crop back to size, random horizontal flip;
      "affine"    glyphs/handwriting (never flipped, a mirrored character is another character): small
                  random rotation, translation, scale and shear.
    The output keeps the input dtype (uint8 stays uint8) and device. Randomness comes only from `generator`
    (or the global RNG when None), so a seeded generator gives identical batches.
    """

    def __init__(
        self,
        kind: str = "none",
        padding: int = 4,
        degrees: float = 10.0,
        translate: float = 0.1,
        scale: tuple[float, float] = (0.9, 1.1),
        shear: float = 8.0,
    ) -> None:
        if kind not in AUGMENT_KINDS:
            raise ConfigError(f"unknown augmentation {kind!r}; choose one of {', '.join(AUGMENT_KINDS)}")
        if padding < 0:
            raise ConfigError(f"augmentation padding must be >= 0, got {padding}")
        if not (0 < scale[0] <= scale[1]):
            raise ConfigError(f"augmentation scale range must be 0 < lo <= hi, got {scale}")
        self.kind = kind
        self.padding = int(padding)
        self.degrees = float(degrees)
        self.translate = float(translate)
        self.scale = (float(scale[0]), float(scale[1]))
        self.shear = float(shear)

    def __repr__(self) -> str:
        return f"BatchAugment(kind={self.kind!r}, padding={self.padding})"

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if images.dim() != 4:
            raise DataError(f"BatchAugment expects a batch [N, C, H, W], got shape {tuple(images.shape)}")
        if self.kind == "none" or images.shape[0] == 0:
            return images
        if self.kind == "flip_crop":
            return self._flip_crop(images, generator)
        return self._affine(images, generator)

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _rand(n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
        """Uniform [0,1) draws on the generator's device, then moved to the batch's device."""
        gdev = generator.device if generator is not None else torch.device("cpu")
        return torch.rand(n, generator=generator, device=gdev).to(device)

    def _flip_crop(self, images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        n, c, h, w = images.shape
        p = self.padding
        dev = images.device
        u = self._rand(3 * n, generator, dev).view(3, n)
        oy = (u[0] * (2 * p + 1)).long().clamp_(max=2 * p)
        ox = (u[1] * (2 * p + 1)).long().clamp_(max=2 * p)
        flip = u[2] < 0.5
        padded = F.pad(images, (p, p, p, p)) if p else images
        wp = w + 2 * p
        rows = oy[:, None] + torch.arange(h, device=dev)[None, :]  # [N, H]
        cols = ox[:, None] + torch.arange(w, device=dev)[None, :]  # [N, W]
        cols = torch.where(flip[:, None], cols.flip(1), cols)
        flat = (rows[:, :, None] * wp + cols[:, None, :]).reshape(n, 1, h * w).expand(n, c, h * w)
        return padded.reshape(n, c, -1).gather(2, flat).view(n, c, h, w)

    def _affine(self, images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        n = images.shape[0]
        dev = images.device
        u = self._rand(5 * n, generator, dev).view(5, n) * 2 - 1  # uniform [-1, 1)
        theta = affine_matrices(
            angle_deg=u[0] * self.degrees,
            scale=self.scale[0] + (u[1] + 1) / 2 * (self.scale[1] - self.scale[0]),
            shear_deg=u[2] * self.shear,
            tx=u[3] * self.translate * 2,  # normalized coords span 2
            ty=u[4] * self.translate * 2,
        )
        return apply_affine(images, theta)


def affine_matrices(
    angle_deg: torch.Tensor, scale: torch.Tensor, shear_deg: torch.Tensor, tx: torch.Tensor, ty: torch.Tensor
) -> torch.Tensor:
    """Per-sample 2x3 matrices for F.affine_grid (output -> input coords in [-1, 1]) of the forward map
    x' = T + R S Sh x: the inverse is built directly, so content rotates by +angle and grows by scale."""
    a = angle_deg * (math.pi / 180.0)
    sh = torch.tan(shear_deg * (math.pi / 180.0))
    cos, sin = torch.cos(a), torch.sin(a)
    # forward M = R @ Sh @ (s I); Sh = [[1, sh], [0, 1]]
    m00 = cos * scale
    m01 = (cos * sh - sin) * scale
    m10 = sin * scale
    m11 = (sin * sh + cos) * scale
    det = m00 * m11 - m01 * m10
    i00, i01, i10, i11 = m11 / det, -m01 / det, -m10 / det, m00 / det
    bx = -(i00 * tx + i01 * ty)
    by = -(i10 * tx + i11 * ty)
    row0 = torch.stack([i00, i01, bx], dim=-1)
    row1 = torch.stack([i10, i11, by], dim=-1)
    return torch.stack([row0, row1], dim=-2)


def _affine_grid(theta: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Same result as F.affine_grid(theta, ..., align_corners=False) but by broadcasting: several times
    faster on CPU for small images than the generic batched matmul."""
    xs = (torch.arange(w, dtype=theta.dtype, device=theta.device) * 2 + 1) / w - 1
    ys = (torch.arange(h, dtype=theta.dtype, device=theta.device) * 2 + 1) / h - 1
    t = theta.reshape(-1, 6, 1, 1)
    xs, ys = xs.view(1, 1, w), ys.view(1, h, 1)
    gx = t[:, 0] * xs + t[:, 1] * ys + t[:, 2]
    gy = t[:, 3] * xs + t[:, 4] * ys + t[:, 5]
    return torch.stack([gx, gy], dim=-1)


def apply_affine(images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """One grid_sample for the whole batch (zero fill = dark background); keeps dtype and device."""
    x = images.float() if images.dtype == torch.uint8 else images
    theta = theta.to(device=x.device, dtype=x.dtype)
    grid = _affine_grid(theta, x.shape[-2], x.shape[-1])
    y = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if images.dtype == torch.uint8:
        return y.round_().clamp_(0, 255).to(torch.uint8)
    return y


def load_rgb_or_gray(
    path: str | Path, image_size: int, channels: int, invert: bool | str = False
) -> torch.Tensor:
    """Read any image file (any size or PIL mode) into what a model expects: uint8 [channels, S, S].

    Kept for the data sources; it is :func:`learngene.data.images.load_image`, the one reader every command uses
    (deep images on their real scale, EXIF orientation, the pixel limit).
    """
    from learngene.data.images import load_image

    return load_image(path, image_size, channels, invert=invert)
