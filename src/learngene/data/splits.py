"""Class splits: which classes the collective model may learn, which stay unknown, which are novel targets.

The paradigm's claim is about *novel* classes (never seen by the collective model), so a split is an
explicit, serializable object checked for overlaps, and the random splits are always seeded. Splitting
by groups (Omniglot alphabets, Unicode scripts) makes novel classes come from unseen families.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from learngene.data.images import ImageSet
from learngene.errors import ConfigError, DataError

__all__ = ["CIFAR100_PAPER_SPLIT", "IMAGENET100_PAPER_SPLIT", "ClassSplit", "paper_split"]

_PARTS = ("source", "open_world", "novel")


def _dupes(items: Sequence[str]) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    for x in items:
        if x in seen and x not in out:
            out.append(x)
        seen.add(x)
    return out


def _check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed must be an integer, got {seed!r}")
    return seed


def _class_sets(data: ImageSet, together: Iterable[Iterable[str]]) -> list[list[str]]:
    """The ``together`` sets as lists of known classes, overlapping sets merged, each of >= 2 classes."""
    sets = [list(dict.fromkeys(str(c) for c in st)) for st in together]
    data.check_classes([c for st in sets for c in st], what="classes to keep together")
    parent = {c: c for st in sets for c in st}

    def root(c: str) -> str:
        while parent[c] != c:
            c = parent[c]
        return c

    for st in sets:
        for c in st[1:]:
            parent[root(c)] = root(st[0])
    merged: dict[str, list[str]] = {}
    for c in data.classes:  # class order, so the result does not depend on how the sets were listed
        if c in parent:
            merged.setdefault(root(c), []).append(c)
    return [m for m in merged.values() if len(m) > 1]


def _group_units(data: ImageSet, together: Iterable[Iterable[str]]) -> dict[str, list[str]]:
    """Units of a group split: each group alone, except that groups sharing a ``together`` set merge.

    A unit is named by its groups joined with '+', in order of first appearance."""
    groups = data.unique_groups()
    parent = {g: g for g in groups}

    def root(g: str) -> str:
        while parent[g] != g:
            g = parent[g]
        return g

    for st in _class_sets(data, together):
        gs = [data.group_of(c) for c in st]
        for g in gs[1:]:
            a, b = root(g), root(gs[0])
            if a != b:
                parent[a] = b
    units: dict[str, list[str]] = {}
    for g in groups:
        units.setdefault(root(g), []).append(g)
    return {"+".join(gs): gs for gs in units.values()}


@dataclass(frozen=True)
class ClassSplit:
    """Which classes the collective model may see (source), which are held out as the open world (to test
    unknown recognition), and which are novel targets for individual models (never seen by the collective
    model)."""

    source: tuple[str, ...]
    open_world: tuple[str, ...]
    novel: tuple[str, ...]

    def __post_init__(self) -> None:
        for part in _PARTS:
            value = getattr(self, part)
            if isinstance(value, str):
                raise DataError(
                    f"ClassSplit.{part} must be a sequence of class names, not the string {value!r}"
                )
            names = tuple(str(x) for x in value)
            object.__setattr__(self, part, names)
            d = _dupes(names)
            if d:
                raise DataError(f"ClassSplit.{part} lists classes more than once: {', '.join(d[:10])}")
        for i, a in enumerate(_PARTS):
            for b in _PARTS[i + 1 :]:
                both = sorted(set(getattr(self, a)) & set(getattr(self, b)))
                if both:
                    shown = ", ".join(both[:10]) + (" ..." if len(both) > 10 else "")
                    raise DataError(
                        f"class split overlaps: {len(both)} class(es) in both {a} and {b}: {shown}; "
                        "each class must belong to exactly one part"
                    )
        if not self.source:
            raise DataError("class split has no source classes: the collective model needs classes to learn")
        if not self.novel:
            raise DataError("class split has no novel classes: individual models need unseen target classes")

    # ------------------------------------------------------------------ views
    @property
    def all_classes(self) -> tuple[str, ...]:
        return self.source + self.open_world + self.novel

    def part_of(self, class_name: str) -> str | None:
        for part in _PARTS:
            if class_name in getattr(self, part):
                return part
        return None

    def sizes(self) -> dict[str, int]:
        return {p: len(getattr(self, p)) for p in _PARTS}

    def validate_against(self, data: ImageSet) -> None:
        """DataError naming every class of the split that the data does not have."""
        data.check_classes(self.all_classes, what="split classes")

    def to_dict(self) -> dict:
        return {p: list(getattr(self, p)) for p in _PARTS}

    @classmethod
    def from_dict(cls, d: dict) -> ClassSplit:
        if not isinstance(d, dict):
            raise DataError(f"a class split must be a mapping with keys {_PARTS}, got {type(d).__name__}")
        unknown = sorted(set(d) - set(_PARTS))
        if unknown or "source" not in d or "novel" not in d:
            raise DataError(
                f"malformed class split: keys {sorted(d)}; expected source, novel and optionally open_world"
            )
        return cls(
            source=tuple(d["source"]), open_world=tuple(d.get("open_world", ())), novel=tuple(d["novel"])
        )

    # ------------------------------------------------------------------ constructors
    @classmethod
    def by_groups(
        cls,
        data: ImageSet,
        source_groups: Iterable[str],
        open_world_groups: Iterable[str],
        novel_groups: Iterable[str],
    ) -> ClassSplit:
        """All classes of the named groups (alphabets, scripts, superclasses) go to each part."""
        parts = {
            "source": list(source_groups),
            "open_world": list(open_world_groups),
            "novel": list(novel_groups),
        }
        known = data.unique_groups()
        missing = [g for gs in parts.values() for g in gs if g not in known]
        if missing:
            raise DataError(
                f"unknown group(s) {', '.join(repr(m) for m in missing)} in {data.name!r}; "
                f"its groups are: {', '.join(known)}"
            )
        for i, a in enumerate(_PARTS):
            for b in _PARTS[i + 1 :]:
                both = sorted(set(parts[a]) & set(parts[b]))
                if both:
                    raise DataError(f"group(s) {', '.join(both)} given for both {a} and {b}")
        out = {}
        for p, gs in parts.items():
            chosen = set(gs)
            out[p] = tuple(c for c, g in zip(data.classes, data.groups) if g in chosen)
        return cls(**out)

    @classmethod
    def random_groups(
        cls,
        data: ImageSet,
        fractions: Sequence[float] = (0.6, 0.15, 0.25),
        seed: int = 0,
        together: Iterable[Iterable[str]] = (),
    ) -> ClassSplit:
        """Split whole GROUPS so novel classes come from families the collective model never saw.

        Groups are shuffled with the seed and each is given to the part whose class count lies furthest
        below its target fraction of all classes; every part with a positive fraction gets >= 1 group.
        ``together``: sets of classes (look-alikes) that must end in one part; the groups of each set are
        merged into one unit first, so a set never straddles the split.
        """
        seed = _check_seed(seed)
        fr = [float(f) for f in fractions]
        if len(fr) != 3 or any(f < 0 for f in fr) or fr[0] <= 0 or fr[2] <= 0:
            raise ConfigError(
                f"fractions must be 3 numbers (source, open_world, novel) with source and novel > 0, got {fractions}"
            )
        total_f = sum(fr)
        fr = [f / total_f for f in fr]
        members = _group_units(data, together)  # unit name -> the groups it merges
        need = sum(1 for f in fr if f > 0)
        if len(members) < need:
            merged = " (after merging the groups of look-alike classes)" if len(members) < len(data.unique_groups()) else ""
            raise DataError(
                f"{data.name!r} has {len(members)} group(s){merged} ({', '.join(members)}) but a group split "
                f"into {need} parts needs at least {need}; use ClassSplit.random_classes instead"
            )
        unit_of = {g: u for u, gs in members.items() for g in gs}
        size = dict.fromkeys(members, 0)
        for g in data.groups:
            size[unit_of[g]] += 1
        # the groups are shuffled and a merged unit takes the place of its first group: without look-alikes
        # (or when they share a group) the split is the plain group split of this seed
        groups = data.unique_groups()
        perm = torch.randperm(len(groups), generator=torch.Generator().manual_seed(seed)).tolist()
        order = list(dict.fromkeys(unit_of[groups[i]] for i in perm))
        total = len(data.classes)
        assigned: list[list[str]] = [[], [], []]
        counts = [0, 0, 0]
        active = [i for i in range(3) if fr[i] > 0]
        # first give each active part one group (smallest target first, so it does not take a huge group
        # by chance when a small one is next in line), then fill by deficit
        for p in sorted(active, key=lambda i: fr[i]):
            g = order.pop(0)
            assigned[p].append(g)
            counts[p] += size[g]
        for g in order:
            p = max(active, key=lambda i: (fr[i] * total - counts[i], -i))
            assigned[p].append(g)
            counts[p] += size[g]
        parts = [[g for u in units for g in members[u]] for units in assigned]
        return cls.by_groups(data, parts[0], parts[1], parts[2])

    @classmethod
    def random_classes(
        cls,
        data: ImageSet,
        n_source: int,
        n_open_world: int,
        n_novel: int,
        seed: int = 0,
        together: Iterable[Iterable[str]] = (),
    ) -> ClassSplit:
        """A seeded random partition of classes regardless of group.

        The classes are shuffled and cut into the parts. ``together``: sets of classes (look-alikes) that
        must end in one part; a set takes the place of its first member in the shuffled order and goes whole
        to the first part with room for it, so the counts stay exact (unless a set has no room left anywhere)
        and without sets the split is the plain cut of this seed.
        """
        seed = _check_seed(seed)
        for label, n, lo in (
            ("n_source", n_source, 1),
            ("n_open_world", n_open_world, 0),
            ("n_novel", n_novel, 1),
        ):
            if isinstance(n, bool) or not isinstance(n, int) or n < lo:
                raise ConfigError(f"{label} must be an integer >= {lo}, got {n!r}")
        want = n_source + n_open_world + n_novel
        if want > len(data.classes):
            raise DataError(
                f"asked for {n_source}+{n_open_world}+{n_novel}={want} classes but {data.name!r} has only "
                f"{len(data.classes)}"
            )
        perm = torch.randperm(len(data.classes), generator=torch.Generator().manual_seed(seed)).tolist()
        set_of = {c: tuple(st) for st in _class_sets(data, together) for c in st}
        # the shuffled classes are cut into the parts in order; a set takes the place of its first member and
        # goes to the first part with room for all of it (without sets this is the plain cut)
        units = list(dict.fromkeys(set_of.get(data.classes[i], (data.classes[i],)) for i in perm))
        target = [n_source, n_open_world, n_novel, len(data.classes) - want]  # the last part is left out
        parts: list[list[str]] = [[], [], [], []]
        for unit in units:
            room = [target[i] - len(parts[i]) for i in range(4)]
            first = next((i for i in range(4) if room[i] >= len(unit)), None)
            parts[first if first is not None else max(range(4), key=lambda i: (room[i], -i))].extend(unit)
        return cls(source=tuple(parts[0]), open_world=tuple(parts[1]), novel=tuple(parts[2]))


# ---------------------------------------------------------------------- the paper's splits (appendix tables)
# CIFAR-100: the appendix lists 64 base names; "cattle" appears in the open-world table and is not among the
# 64 base names given here, so source/open-world/novel = 64/16/20 and cover all 100 classes exactly.
_CIFAR_SOURCE = """lobster dinosaur snake plate can chair oak_tree turtle tulip pear mushroom lizard kangaroo castle
skunk apple rabbit seal pine_tree spider bowl hamster trout orange streetcar clock tiger couch bottle palm_tree train
bee road porcupine caterpillar sunflower house aquarium_fish raccoon keyboard tank forest wolf boy mountain ray cup
bridge lawn_mower lion dolphin shrew bus elephant orchid bear cockroach cloud girl willow_tree squirrel skyscraper
mouse possum""".split()
_CIFAR_OPEN = """beetle beaver butterfly camel cattle crab crocodile flatfish lamp maple_tree motorcycle otter sea shark
television tractor""".split()
_CIFAR_NOVEL = """baby bed bicycle chimpanzee fox leopard man pickup_truck plain poppy rocket rose snail sweet_pepper
table telephone wardrobe whale woman worm""".split()

_IMNET_SOURCE = """n02091831 n02747177 n03527444 n03337140 n07697537 n13133613 n04251144 n01532829 n04443257 n03908618
n01558993 n03047690 n02687172 n02795169 n04515003 n01770081 n04067472 n03924679 n02089867 n02108551 n02165456 n02108089
n13054560 n02823428 n04596742 n03062245 n03476684 n01704323 n04604644 n02105505 n02113712 n07747607 n06794110 n04243546
n04389033 n02606052 n02108915 n03017168 n04258138 n03854065 n02457408 n02120079 n03207743 n04275548 n04612504 n03347037
n01843383 n04296562 n04435653 n04509417 n03998194 n09246464 n01749939 n03888605 n07584110 n03400231 n02966193 n01910747
n03676483 n03838899 n02074367 n03220513 n02111277 n02101006""".split()
_IMNET_OPEN = """n02971356 n03535780 n03770439 n03075370 n03417042 n03584254 n09256479 n02114548 n02091244 n01855672
n02950826 n03773504 n02174001 n02138441 n02981792 n03980874""".split()
_IMNET_NOVEL = """n02110341 n01981276 n03146219 n04149813 n02219486 n02871525 n02110063 n04418357 n02116738 n03544143
n04522168 n02129165 n07613480 n03775546 n03127925 n03272010 n01930112 n02443484 n04146614 n02099601""".split()

CIFAR100_PAPER_SPLIT = ClassSplit(
    source=tuple(c for c in _CIFAR_SOURCE if c not in _CIFAR_OPEN),
    open_world=tuple(_CIFAR_OPEN),
    novel=tuple(_CIFAR_NOVEL),
)
IMAGENET100_PAPER_SPLIT = ClassSplit(
    source=tuple(_IMNET_SOURCE), open_world=tuple(_IMNET_OPEN), novel=tuple(_IMNET_NOVEL)
)

_PAPER_SPLITS = {"cifar100": CIFAR100_PAPER_SPLIT, "imagenet100": IMAGENET100_PAPER_SPLIT}


def paper_split(name: str) -> ClassSplit:
    """The class split of the paper's appendix for 'cifar100' or 'imagenet100'."""
    try:
        return _PAPER_SPLITS[name]
    except KeyError:
        raise ConfigError(
            f"no paper split named {name!r}; choose one of {', '.join(_PAPER_SPLITS)}"
        ) from None
