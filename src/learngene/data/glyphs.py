"""The embedded default dataset: glyphs rendered from the TrueType fonts that ship inside matplotlib.

Why: learngene must run right after ``pip install`` with no data files and no network. matplotlib (a
dependency anyway) ships ~40 fonts (DejaVu, STIX, Computer Modern). Rendering one Unicode code point in
every font that covers it gives an Omniglot-like problem: a class is a character, each font is a different
"drawer", and the Unicode script (Latin, Greek, Cyrillic, Armenian, Georgian, box drawing, arrows, ...)
plays the role of Omniglot's alphabet, so source and novel classes can come from different scripts.

Renderings use matplotlib.ft2font.FT2Font directly (about 0.1 ms per glyph) and are cached on disk.
"""

from __future__ import annotations

import hashlib
import json
import time
import unicodedata
from collections import Counter, defaultdict
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from learngene.data.imagecache import cache_dir, cached_build
from learngene.data.images import ImageSet
from learngene.data.transforms import affine_matrices, apply_affine
from learngene.errors import ConfigError, DataError

__all__ = ["GLYPHS_VERSION", "font_files", "glyph_candidates", "glyph_char", "load_glyphs", "script_group"]

GLYPHS_VERSION = 2  # bump when rendering changes, so old caches are not reused

# LastResort draws a placeholder box for *every* code point: it is not a real drawing of any character.
_EXCLUDED_FONTS = {"LastResortHE-Regular.ttf"}
# Computer Modern fonts use TeX encodings: code points only mean what they say for ASCII letters/digits
# whose glyph name confirms it (cmex10 maps 'A' to a big delimiter, for example).
_DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_SKIP_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp", "Mn", "Mc", "Me"}
_SCRIPTS = {
    "LATIN", "GREEK", "COPTIC", "CYRILLIC", "ARMENIAN", "HEBREW", "ARABIC", "SYRIAC", "THAANA", "NKO",
    "GEORGIAN", "THAI", "LAO", "KHMER", "TIFINAGH", "CHEROKEE", "OGHAM", "RUNIC", "BRAILLE", "HANGUL",
    "HIRAGANA", "KATAKANA", "DEVANAGARI", "BENGALI", "TAMIL", "ETHIOPIC", "MONGOLIAN", "GLAGOLITIC", "VAI",
    "LISU",
}  # fmt: skip
_MIN_GROUP = 8  # groups smaller than this (among candidates) are merged into SYMBOL
_FIT = 0.82  # the glyph's longer side fills this fraction of the image
_MAX_ZOOM_EM = 0.5  # never magnify a glyph beyond what a glyph half an em tall gets: '.' stays small


def font_dir() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def font_files() -> list[Path]:
    """The usable matplotlib fonts, sorted by name (the order fixes the 'drawer' ids)."""
    d = font_dir()
    files = sorted(p for p in d.glob("*.ttf") if p.name not in _EXCLUDED_FONTS)
    if not files:
        raise DataError(f"no TrueType fonts found under {d}; the matplotlib installation looks incomplete")
    return files


@lru_cache(maxsize=4)
def _fonts(paths: tuple[str, ...]) -> list:
    from matplotlib.ft2font import FT2Font

    return [FT2Font(p) for p in paths]


def glyph_char(class_name: str) -> str:
    """'U+0416' -> 'Ж' (for plots and reports)."""
    try:
        return chr(int(class_name.removeprefix("U+"), 16))
    except ValueError as exc:
        raise DataError(f"{class_name!r} is not a glyph class name like 'U+0416'") from exc


def _usable_codepoint(cp: int) -> bool:
    ch = chr(cp)
    if unicodedata.category(ch) in _SKIP_CATEGORIES or ch.isspace():
        return False
    return bool(unicodedata.name(ch, ""))


def _raw_group(cp: int) -> str:
    ch = chr(cp)
    words = unicodedata.name(ch, "").split()
    cat = unicodedata.category(ch)
    for w in words:
        if w in _SCRIPTS:
            return w
    if words and words[0] == "MATHEMATICAL":
        return "MATHEMATICAL"
    if 0x2190 <= cp <= 0x21FF or 0x27F0 <= cp <= 0x27FF or 0x2900 <= cp <= 0x297F or 0x2B00 <= cp <= 0x2BFF:
        return "ARROWS"
    if 0x2500 <= cp <= 0x259F:
        return "BOX"
    if 0x25A0 <= cp <= 0x25FF:
        return "GEOMETRIC"
    if 0x2200 <= cp <= 0x22FF or 0x2A00 <= cp <= 0x2AFF or 0x27C0 <= cp <= 0x27EF or 0x2980 <= cp <= 0x29FF:
        return "MATHEMATICAL"
    if cat == "Sm":
        return "MATHEMATICAL"
    if cat in ("Lm", "Sk"):
        return "MODIFIER"
    if cat[0] == "N":
        return "NUMBER"
    if cat[0] == "P":
        return "PUNCTUATION"
    if cat == "Sc":
        return "CURRENCY"
    if cat[0] == "L":
        return "LETTERLIKE"
    return "SYMBOL"


def script_group(cp: int) -> str:
    """The script (LATIN, GREEK, ...) of a letter, else a symbol family (ARROWS, BOX, MATHEMATICAL, ...)."""
    return _raw_group(cp)


def _font_coverage(files: list[Path]) -> dict[int, list[int]]:
    """code point -> indices of the fonts that really draw it."""
    cover: dict[int, list[int]] = defaultdict(list)
    for fi, font in enumerate(_fonts(tuple(str(f) for f in files))):
        tex = files[fi].name.startswith("cm")
        for cp, gid in font.get_charmap().items():
            if not _usable_codepoint(cp):
                continue
            if tex:
                ch = chr(cp)
                if not ch.isascii():
                    continue
                name = font.get_glyph_name(gid)
                ok = (ch.isalpha() and name == ch) or (ch.isdigit() and name == _DIGIT_NAMES[int(ch)])
                if not ok:
                    continue
            cover[cp].append(fi)
    return dict(cover)


def glyph_candidates(min_fonts: int = 12) -> dict[int, tuple[str, list[int]]]:
    """Code points drawn by >= min_fonts fonts -> (group, font indices), tiny groups merged into SYMBOL.

    Candidates are filtered further at render time (blank renderings, duplicates)."""
    files = font_files()
    cover = _font_coverage(files)
    cands = {cp: fis for cp, fis in sorted(cover.items()) if len(fis) >= min_fonts}
    raw = {cp: _raw_group(cp) for cp in cands}
    sizes = Counter(raw.values())
    return {cp: (raw[cp] if sizes[raw[cp]] >= _MIN_GROUP else "SYMBOL", fis) for cp, fis in cands.items()}


def _render(font, cp: int, em_px: int, image_size: int) -> np.ndarray | None:
    """One glyph, bright on dark, centred and scaled to fit an image_size square; None if blank."""
    from matplotlib.ft2font import LoadFlags
    from PIL import Image

    font.set_size(em_px, 72)  # 72 dpi: the size in points is the em in pixels
    font.set_text(chr(cp), 0.0, flags=LoadFlags.NO_HINTING)
    font.draw_glyphs_to_bitmap(antialiased=True)
    bmp = np.asarray(font.get_image())
    if bmp.size == 0:
        return None
    mask = bmp > 24
    if int(mask.sum()) < 4:
        return None
    rows = np.flatnonzero(mask.any(1))
    cols = np.flatnonzero(mask.any(0))
    crop = bmp[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    h, w = crop.shape
    inner = _FIT * image_size
    scale = min(inner / max(h, w), inner / (_MAX_ZOOM_EM * em_px))
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    small = np.asarray(Image.fromarray(np.ascontiguousarray(crop)).resize((nw, nh), Image.Resampling.LANCZOS))
    out = np.zeros((image_size, image_size), dtype=np.uint8)
    top, left = (image_size - nh) // 2, (image_size - nw) // 2
    out[top : top + nh, left : left + nw] = small
    peak = int(out.max())
    if peak < 32:  # too thin to survive downscaling
        return None
    if peak < 255:  # hairlines come out grey after downscaling: stretch so every glyph has full-contrast ink
        out = np.clip(np.rint(out.astype(np.float32) * (255.0 / peak)), 0, 255).astype(np.uint8)
    return out


def _thicken(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Per-sample stroke-thickness change: t > 0 blends towards a 3x3 dilation, t < 0 towards an erosion."""
    dil = F.max_pool2d(x, 3, 1, 1)
    ero = -F.max_pool2d(-x, 3, 1, 1)
    t = t.view(-1, 1, 1, 1)
    return x + t.clamp(min=0) * (dil - x) - (-t).clamp(min=0) * (x - ero)


def _augment(base: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Small affine + stroke thickness with per-sample parameters u [n, 6] in [-1, 1); uint8 -> uint8.

    Called once for all classes together: one grid_sample for the batch instead of one per class."""
    if base.shape[0] == 0:
        return base
    u = u.t()
    theta = affine_matrices(
        angle_deg=u[0] * 12.0,
        scale=0.95 + u[1] * 0.1,
        shear_deg=u[2] * 10.0,
        tx=u[3] * 0.12,
        ty=u[4] * 0.12,
    )
    y = apply_affine(base.float(), theta)
    y = _thicken(y, u[5] * 0.55 + 0.15)  # thickness in [-0.4, 0.7]: erosion fades thin strokes fast
    y = y * (255.0 / y.amax((1, 2, 3), keepdim=True).clamp_min(1.0))  # full-contrast ink, as the renderings
    return y.round_().clamp_(0, 255).to(torch.uint8)


def _class_seed(seed: int, cp: int) -> int:
    return (seed * 1_000_003 + cp * 7_919) % (2**63)


def _selection_order(
    cands: dict[int, tuple[str, list[int]]], max_classes: int | None, seed: int
) -> list[int]:
    """Code point order in which candidates are tried. With max_classes: round-robin over groups (each
    group shuffled by the seed) so a small set still spans every script."""
    if max_classes is None:
        return list(cands)
    by_group: dict[str, list[int]] = defaultdict(list)
    for cp, (g, _) in cands.items():
        by_group[g].append(cp)
    gen = torch.Generator().manual_seed(seed)
    queues = []
    for g in sorted(by_group):
        cps = by_group[g]
        perm = torch.randperm(len(cps), generator=gen).tolist()
        queues.append([cps[i] for i in perm])
    order: list[int] = []
    depth = 0
    while any(depth < len(q) for q in queues):
        order.extend(q[depth] for q in queues if depth < len(q))
        depth += 1
    return order


def _build_glyphs(
    image_size: int, per_class: int, max_classes: int | None, min_fonts: int, seed: int
) -> ImageSet:
    files = font_files()
    fonts = _fonts(tuple(str(f) for f in files))
    cands = glyph_candidates(min_fonts)
    em_px = max(40, 2 * image_size)  # render at ~2x, then antialiased downscale
    accepted: list[tuple[int, str, list[np.ndarray]]] = []
    seen: dict[tuple[int, bytes], list[int]] = defaultdict(list)  # (font, image hash) -> accepted cps
    for cp in _selection_order(cands, max_classes, seed):
        if max_classes is not None and len(accepted) >= max_classes:
            break
        group, fis = cands[cp]
        rendered: list[tuple[int, np.ndarray]] = []
        for fi in fis:
            img = _render(fonts[fi], cp, em_px, image_size)
            if img is not None:
                rendered.append((fi, img))
        if len(rendered) < min_fonts:
            continue
        keys = [(fi, hashlib.blake2b(img.tobytes(), digest_size=12).digest()) for fi, img in rendered]
        # the same drawing as an accepted class in at least half its fonts (Latin A vs Greek Alpha) -> skip
        same = Counter(q for k in keys for q in seen.get(k, ()))
        if same and same.most_common(1)[0][1] * 2 >= len(keys):
            continue
        # within a class, identical renderings (e.g. Oblique vs Regular of a symbol) are one drawer
        uniq: dict[bytes, np.ndarray] = {}
        for (_, h), (_, img) in zip(keys, rendered):
            uniq.setdefault(h, img)
        for k in keys:
            seen[k].append(cp)
        accepted.append((cp, group, list(uniq.values())))
    if not accepted:
        raise DataError(f"no glyph class is drawn by >= {min_fonts} matplotlib fonts; lower min_fonts")
    accepted.sort(key=lambda a: a[0])

    # Per class, a generator seeded by (seed, code point) picks the fonts kept and the augmentation
    # parameters, so a class looks the same whichever other classes are selected.
    kept: list[torch.Tensor] = []
    aug_base: list[torch.Tensor] = []
    aug_params: list[torch.Tensor] = []
    n_aug_per_class: list[int] = []
    for cp, _, drawings in accepted:
        gen = torch.Generator().manual_seed(_class_seed(seed, cp))
        perm = torch.randperm(len(drawings), generator=gen).tolist()
        # numpy selection: tiny torch index ops cost a thread-pool round trip each
        kept.append(torch.from_numpy(np.stack([drawings[i] for i in perm[:per_class]])).unsqueeze(1))
        n_aug = per_class - kept[-1].shape[0]
        n_aug_per_class.append(n_aug)
        if n_aug > 0:
            src = [drawings[perm[j % len(perm)]] for j in range(n_aug)]
            aug_base.append(torch.from_numpy(np.stack(src)).unsqueeze(1))
            aug_params.append(torch.rand(n_aug, 6, generator=gen) * 2 - 1)
    augmented = _augment(torch.cat(aug_base), torch.cat(aug_params)) if aug_base else None
    images: list[torch.Tensor] = []
    offset = 0
    for keep, n_aug in zip(kept, n_aug_per_class):
        images.append(keep)
        if n_aug > 0 and augmented is not None:
            images.append(augmented[offset : offset + n_aug])
            offset += n_aug
    imgs = torch.cat(images)
    counts = [per_class] * len(accepted)
    labels = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    classes = [f"U+{cp:04X}" for cp, _, _ in accepted]
    groups = [g for _, g, _ in accepted]
    return ImageSet(images=imgs, labels=labels, classes=classes, groups=groups, name="glyphs")


def _cache_key(image_size: int, per_class: int, max_classes: int | None, min_fonts: int, seed: int) -> str:
    import matplotlib

    fonts = [(f.name, f.stat().st_size) for f in font_files()]
    blob = json.dumps(
        {
            "v": GLYPHS_VERSION,
            "image_size": image_size,
            "per_class": per_class,
            "max_classes": max_classes,
            "min_fonts": min_fonts,
            "seed": seed,
            "matplotlib": matplotlib.__version__,
            "unicodedata": unicodedata.unidata_version,
            "fonts": fonts,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def load_glyphs(
    image_size: int = 32,
    per_class: int = 20,
    max_classes: int | None = None,
    min_fonts: int = 12,
    seed: int = 0,
    cache: bool = True,
) -> ImageSet:
    """Rendered glyph dataset (1 channel, bright strokes on dark), deterministic for its arguments.

    A class is a code point drawn by >= min_fonts fonts; its images are the font renderings (a seeded
    choice of per_class of them when there are more) plus seeded small affine/thickness augmentations of
    them until per_class. Identical-looking code points (e.g. Latin 'A' and Greek 'Alpha') are kept once.
    With max_classes, classes are picked round-robin across scripts. Cached under cache_dir()/glyphs.
    """
    for label, v, lo in (
        ("image_size", image_size, 8),
        ("per_class", per_class, 1),
        ("min_fonts", min_fonts, 1),
    ):
        if not isinstance(v, int) or v < lo:
            raise ConfigError(f"glyphs: {label} must be an integer >= {lo}, got {v!r}")
    if max_classes is not None and (not isinstance(max_classes, int) or max_classes < 1):
        raise ConfigError(f"glyphs: max_classes must be None or an integer >= 1, got {max_classes!r}")

    def build() -> ImageSet:
        return _build_glyphs(image_size, per_class, max_classes, min_fonts, seed)

    if not cache:
        return build()
    key = _cache_key(image_size, per_class, max_classes, min_fonts, seed)
    return cached_build(cache_dir() / "glyphs" / f"glyphs-{key}.safetensors", build)


def _main() -> None:  # pragma: no cover - a report for developers: python -m learngene.data.glyphs
    t = time.perf_counter()
    full = load_glyphs(cache=False, per_class=20)
    dt = time.perf_counter() - t
    print(f"{full.describe()} in {dt:.1f}s")
    print(Counter(full.groups).most_common())


if __name__ == "__main__":  # pragma: no cover
    _main()
