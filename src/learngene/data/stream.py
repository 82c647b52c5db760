"""The open-world task stream the collective model learns from (Avalanche's nouns: a stream of experiences).

Every image of a source class is put ONCE into a train or a test pool (seeded), so no test image is ever
trained on, whatever task the class reappears in. Tasks then draw `ways` source classes each. Labels are
global (one label space over the whole stream, in order of first appearance) so a growing classifier head
keeps old outputs meaningful. A stream is fully described by its manifest (indices included), so a run
can be resumed or audited against exactly the same data.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from learngene.data.images import ImageSet
from learngene.data.splits import ClassSplit
from learngene.errors import ConfigError, DataError

__all__ = ["CLASS_SAMPLING", "Experience", "TaskStream", "load_manifest"]

CLASS_SAMPLING = ("new_first", "random")
_MANIFEST_FORMAT = "learngene.task_stream"
_MANIFEST_VERSION = 1


def _stream_seed(seed: int, tag: str) -> int:
    """Independent, stable sub-seeds (pools vs. task classes vs. images) from one user seed, so e.g. asking
    for more tasks does not reshuffle the train/test pools.

    Private on purpose: the package's one public seed function is :func:`learngene.runtime.derive_seed`; this
    older scheme stays only because saved stream manifests and published numbers were drawn with it."""
    h = hashlib.sha256(f"{int(seed)}:{tag}".encode()).digest()
    return int.from_bytes(h[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


def _as_index(values, what: str) -> torch.Tensor:
    try:
        t = torch.as_tensor(values, dtype=torch.int64)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise DataError(f"manifest: {what} must be a list of integers ({exc})") from exc
    if t.dim() != 1:
        raise DataError(f"manifest: {what} must be a flat list of integers")
    return t


@dataclass(eq=False)
class Experience:
    """One task of the stream."""

    task_id: int
    classes: list[str]  # the C classes of this task
    labels: list[int]  # their GLOBAL labels (index into stream.class_order)
    new_classes: list[str]  # ground truth: classes not in any earlier experience
    train_indices: torch.Tensor  # int64 indices into the ImageSet
    test_indices: torch.Tensor

    @property
    def ways(self) -> int:
        return len(self.classes)

    def to_dict(self) -> dict:
        return {
            "task_id": self.task_id,
            "classes": list(self.classes),
            "labels": list(self.labels),
            "new_classes": list(self.new_classes),
            "train_indices": self.train_indices.tolist(),
            "test_indices": self.test_indices.tolist(),
        }


class TaskStream:
    """A seeded sequence of `n_tasks` experiences over the split's source classes."""

    def __init__(
        self,
        data: ImageSet,
        split: ClassSplit,
        n_tasks: int,
        ways: int = 5,
        train_per_class: int | None = None,
        test_fraction: float = 0.2,
        class_sampling: str = "new_first",
        seed: int = 0,
    ) -> None:
        for label, v in (("n_tasks", n_tasks), ("ways", ways), ("seed", seed)):
            if isinstance(v, bool) or not isinstance(v, int):
                raise ConfigError(f"stream: {label} must be an integer, got {v!r}")
        if n_tasks < 1:
            raise ConfigError(f"stream: n_tasks must be >= 1, got {n_tasks}")
        if ways < 1:
            raise ConfigError(f"stream: ways (classes per task) must be >= 1, got {ways}")
        if train_per_class is not None and (
            isinstance(train_per_class, bool) or not isinstance(train_per_class, int) or train_per_class < 1
        ):
            raise ConfigError(
                f"stream: train_per_class must be None or an integer >= 1, got {train_per_class!r}"
            )
        if not isinstance(test_fraction, (int, float)) or not 0.0 < float(test_fraction) < 1.0:
            raise ConfigError(
                f"stream: test_fraction must lie strictly between 0 and 1, got {test_fraction!r}"
            )
        if class_sampling not in CLASS_SAMPLING:
            raise ConfigError(
                f"stream: unknown class_sampling {class_sampling!r}; choose one of {', '.join(CLASS_SAMPLING)}"
            )
        split.validate_against(data)
        if ways > len(split.source):
            raise DataError(
                f"stream: asked for {ways} classes per task but the split has only {len(split.source)} source "
                f"classes; lower ways or move classes into the source part"
            )
        if ways == len(split.source) and n_tasks > 1:
            raise DataError(
                f"stream: ways = {ways} is every source class, so all {n_tasks} tasks would hold the same {ways} "
                f"classes and no task would bring a new one; lower ways below {ways} or give the source part more "
                "classes (or use n_tasks = 1)"
            )
        self.data = data
        self.split = split
        self.n_tasks = n_tasks
        self.ways = ways
        self.train_per_class = train_per_class
        self.test_fraction = float(test_fraction)
        self.class_sampling = class_sampling
        self.seed = seed

        self._pools = self._make_pools()
        class_lists = self._sample_task_classes()
        img_gen = torch.Generator().manual_seed(_stream_seed(seed, "images"))
        raw = []
        for classes in class_lists:
            train = []
            for c in classes:
                pool = self._pools[c][0]
                if train_per_class is None:
                    train.append(pool)
                else:
                    if train_per_class > len(pool):
                        raise DataError(
                            f"stream: class {c!r} has {len(pool)} training images (after holding out "
                            f"{self.test_fraction:.0%} for testing) but train_per_class={train_per_class}; "
                            "lower train_per_class or test_fraction"
                        )
                    pick = torch.randperm(len(pool), generator=img_gen)[:train_per_class]
                    train.append(pool[pick.sort().values])
            test = [self._pools[c][1] for c in classes]
            raw.append((classes, torch.cat(train), torch.cat(test)))
        self._build(raw)

    # ------------------------------------------------------------------ construction helpers
    def _make_pools(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        gen = torch.Generator().manual_seed(_stream_seed(self.seed, "pools"))
        pools: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for c in self.split.source + self.split.open_world:
            idx = self.data.indices_of(c)
            n = len(idx)
            if n < 2:
                raise DataError(
                    f"stream: class {c!r} has {n} image(s); every stream class needs at least 2 "
                    "(one to train on, one to test on)"
                )
            n_test = min(n - 1, max(1, round(self.test_fraction * n)))
            perm = idx[torch.randperm(n, generator=gen)]
            pools[c] = (perm[n_test:].sort().values, perm[:n_test].sort().values)
        return pools

    def _sample_task_classes(self) -> list[list[str]]:
        gen = torch.Generator().manual_seed(_stream_seed(self.seed, "tasks"))
        source = list(self.split.source)
        k = self.ways
        tasks: list[list[str]] = []
        if self.class_sampling == "random":
            for _ in range(self.n_tasks):
                tasks.append([source[i] for i in torch.randperm(len(source), generator=gen)[:k].tolist()])
            return tasks
        order = [source[i] for i in torch.randperm(len(source), generator=gen).tolist()]
        ptr = 0
        for _ in range(self.n_tasks):
            if ptr < len(order):
                fresh = order[ptr : ptr + k]
                ptr += len(fresh)
                if len(fresh) < k:  # the last unseen classes, topped up with already-seen ones
                    seen = order[: ptr - len(fresh)]
                    extra = torch.randperm(len(seen), generator=gen)[: k - len(fresh)].tolist()
                    fresh = fresh + [seen[i] for i in extra]
                tasks.append(fresh)
            else:
                tasks.append([source[i] for i in torch.randperm(len(source), generator=gen)[:k].tolist()])
        return tasks

    def _build(self, raw: list[tuple[list[str], torch.Tensor, torch.Tensor]]) -> None:
        """Assign global labels in order of first appearance and make the experiences."""
        self.class_order: list[str] = []
        self._label: dict[str, int] = {}
        self._seen_after: list[int] = []
        self.experiences: list[Experience] = []
        for t, (classes, train, test) in enumerate(raw):
            new = [c for c in classes if c not in self._label]
            for c in new:
                self._label[c] = len(self.class_order)
                self.class_order.append(c)
            self._seen_after.append(len(self.class_order))
            self.experiences.append(
                Experience(
                    task_id=t,
                    classes=list(classes),
                    labels=[self._label[c] for c in classes],
                    new_classes=new,
                    train_indices=train,
                    test_indices=test,
                )
            )
        table = torch.full((len(self.data.classes),), -1, dtype=torch.int64)
        for c, i in self._label.items():
            table[self.data.class_index(c)] = i
        self._table = table
        ow = self.split.open_world
        empty = torch.zeros(0, dtype=torch.int64)
        self.open_world_test_indices: torch.Tensor = (
            torch.cat([self._pools[c][1] for c in ow]) if ow else empty
        )
        self.open_world_train_indices: torch.Tensor = (
            torch.cat([self._pools[c][0] for c in ow]) if ow else empty
        )

    # ------------------------------------------------------------------ sequence protocol
    def __len__(self) -> int:
        return len(self.experiences)

    def __iter__(self) -> Iterator[Experience]:
        return iter(self.experiences)

    def __getitem__(self, i: int) -> Experience:
        return self.experiences[i]

    def __repr__(self) -> str:
        return (
            f"TaskStream({self.data.name!r}, tasks={len(self)}, ways={self.ways}, "
            f"classes_seen={len(self.class_order)}, sampling={self.class_sampling!r}, seed={self.seed})"
        )

    # ------------------------------------------------------------------ labels and pools
    @property
    def num_classes(self) -> int:
        """Size of the global label space after the whole stream."""
        return len(self.class_order)

    def classes_seen(self, upto_task: int) -> list[str]:
        """Classes of tasks 0..upto_task, in global-label order."""
        return self.class_order[: self._seen_after[self._check_task(upto_task)]]

    def global_label(self, class_name: str) -> int:
        try:
            return self._label[class_name]
        except KeyError:
            part = self.split.part_of(class_name)
            why = f"it is a {part} class" if part else "it is not in the split"
            raise DataError(f"class {class_name!r} has no label in this stream: {why}") from None

    def targets(self, indices: torch.Tensor) -> torch.Tensor:
        """Global labels (int64) of those images; -1 for images of classes outside the stream (open-world,
        novel), i.e. 'unknown' to the collective model."""
        idx = torch.as_tensor(indices, dtype=torch.int64)
        # index_select, not fancy indexing: much cheaper for per-batch calls on small CPU tensors
        return self._table.index_select(0, self.data.labels.index_select(0, idx.cpu().reshape(-1))).to(
            idx.device
        )

    def train_pool(self, class_name: str) -> torch.Tensor:
        return self._pool(class_name)[0]

    def test_pool(self, class_name: str) -> torch.Tensor:
        return self._pool(class_name)[1]

    def _pool(self, class_name: str) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            return self._pools[class_name]
        except KeyError:
            raise DataError(
                f"class {class_name!r} is neither a source nor an open-world class of this stream"
            ) from None

    def _check_task(self, t: int) -> int:
        if isinstance(t, bool) or not isinstance(t, int) or not -len(self) <= t < len(self):
            raise ConfigError(f"task index {t!r} out of range for a stream of {len(self)} tasks")
        return t % len(self)

    def seen_test_indices(self, upto_task: int) -> torch.Tensor:
        """Test images of every class seen in tasks 0..upto_task (to measure forgetting)."""
        classes = self.classes_seen(upto_task)
        return torch.cat([self._pools[c][1] for c in classes])

    # ------------------------------------------------------------------ manifest
    def to_manifest(self) -> dict:
        """Everything needed to rebuild this stream exactly, as plain JSON types."""
        return {
            "format": _MANIFEST_FORMAT,
            "version": _MANIFEST_VERSION,
            "data": {
                "name": self.data.name,
                "num_images": len(self.data),
                "num_classes": len(self.data.classes),
                "image_size": self.data.image_size,
                "channels": self.data.channels,
            },
            "split": self.split.to_dict(),
            "params": {
                "n_tasks": self.n_tasks,
                "ways": self.ways,
                "train_per_class": self.train_per_class,
                "test_fraction": self.test_fraction,
                "class_sampling": self.class_sampling,
            },
            "seed": self.seed,
            "class_order": list(self.class_order),
            "pools": {c: {"train": tr.tolist(), "test": te.tolist()} for c, (tr, te) in self._pools.items()},
            "experiences": [e.to_dict() for e in self.experiences],
        }

    def save_manifest(self, path: str | Path) -> Path:
        """Write the manifest as JSON, atomically."""
        from learngene.safeio import atomic_write_bytes

        path = Path(path)
        atomic_write_bytes(path, json.dumps(self.to_manifest(), separators=(",", ":")).encode("utf-8"))
        return path

    @classmethod
    def from_dataset(
        cls,
        dataset,
        *,
        n_tasks: int,
        ways: int = 5,
        novel_fraction: float = 0.25,
        open_world_fraction: float = 0.0,
        seed: int = 0,
        image_size: int | None = None,
        channels: int | None = None,
        **stream_options,
    ) -> TaskStream:
        """A task stream over any torch ``Dataset`` of (image, label) pairs (or an :class:`ImageSet`).

        The classes are split at random (``seed``) into source classes (the stream's tasks draw from them),
        open-world classes (never trained: they measure unknown-class recognition) and novel classes (kept for
        the individual models); ``stream_options`` are :class:`TaskStream`'s (``train_per_class``,
        ``test_fraction``, ``class_sampling``).
        """
        data = dataset if isinstance(dataset, ImageSet) else ImageSet.from_dataset(
            dataset, image_size=image_size, channels=channels)
        n = data.num_classes
        n_novel = int(round(n * novel_fraction))
        n_open = int(round(n * open_world_fraction))
        if n - n_novel - n_open < ways:
            raise DataError(
                f"stream: {n} classes leave {n - n_novel - n_open} source classes after the novel "
                f"({n_novel}) and open-world ({n_open}) ones, fewer than ways = {ways}; lower the fractions or ways"
            )
        if 0 < novel_fraction and n_novel < 2:
            raise DataError(
                f"stream: novel_fraction = {novel_fraction:g} of {n} classes leaves {n_novel} novel class(es); "
                "the individual models' few-shot tasks need at least 2 novel classes; raise novel_fraction or use "
                "a dataset with more classes (novel_fraction = 0 keeps none, for a collective model only)"
            )
        split = ClassSplit.random_classes(data, n - n_novel - n_open, n_open, n_novel, seed=seed)
        return cls(data, split, n_tasks=n_tasks, ways=ways, seed=seed, **stream_options)

    @classmethod
    def from_manifest(cls, data: ImageSet, manifest: dict) -> TaskStream:
        """Rebuild a stream exactly from its manifest; DataError if `data` is not the data it was made on."""
        if not isinstance(manifest, dict) or manifest.get("format") != _MANIFEST_FORMAT:
            raise DataError("not a learngene task-stream manifest (missing format 'learngene.task_stream')")
        if manifest.get("version") != _MANIFEST_VERSION:
            raise DataError(
                f"task-stream manifest version {manifest.get('version')!r} is not supported "
                f"(this learngene reads version {_MANIFEST_VERSION})"
            )
        try:
            params = manifest["params"]
            split = ClassSplit.from_dict(manifest["split"])
            pools_raw = manifest["pools"]
            exps_raw = manifest["experiences"]
            seed = int(manifest["seed"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"malformed task-stream manifest: missing or bad field {exc}") from exc
        made_on = manifest.get("data", {}).get("name", "?")
        split.validate_against(data)
        n = len(data)

        def checked(values, c: str, what: str) -> torch.Tensor:
            idx = _as_index(values, what)
            if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
                raise DataError(
                    f"manifest {what}: index out of range for image set {data.name!r} with {n} images "
                    f"(the manifest was made on {made_on!r}); load the same data the stream was made on"
                )
            if c and idx.numel() and bool((data.labels[idx] != data.class_index(c)).any()):
                raise DataError(
                    f"manifest {what}: indices do not point at images of class {c!r} in {data.name!r}; "
                    f"the data differs from the one the stream was made on ({made_on!r})"
                )
            return idx

        self = cls.__new__(cls)
        self.data = data
        self.split = split
        try:
            self.n_tasks = int(params["n_tasks"])
            self.ways = int(params["ways"])
            self.train_per_class = params["train_per_class"]
            self.test_fraction = float(params["test_fraction"])
            self.class_sampling = str(params["class_sampling"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"malformed task-stream manifest params: {exc}") from exc
        self.seed = seed
        self._pools = {}
        for c, p in pools_raw.items():
            data.class_index(c)
            self._pools[c] = (
                checked(p["train"], c, f"train pool of {c!r}"),
                checked(p["test"], c, f"test pool of {c!r}"),
            )
        raw = []
        for i, e in enumerate(exps_raw):
            classes = [str(c) for c in e["classes"]]
            missing = [c for c in classes if c not in self._pools]
            if missing:
                raise DataError(f"manifest experience {i} uses classes without pools: {missing}")
            train = checked(e["train_indices"], "", f"train indices of task {i}")
            test = checked(e["test_indices"], "", f"test indices of task {i}")
            allowed = torch.tensor([data.class_index(c) for c in classes])
            for idx, what in ((train, "train"), (test, "test")):
                if idx.numel() and not bool(torch.isin(data.labels[idx], allowed).all()):
                    raise DataError(
                        f"manifest task {i}: {what} indices point at images outside its classes; "
                        f"the data differs from the one the stream was made on ({made_on!r})"
                    )
            raw.append((classes, train, test))
        self._build(raw)
        if self.class_order != list(manifest.get("class_order", self.class_order)):
            raise DataError(
                "task-stream manifest is inconsistent: its class_order does not match its experiences"
            )
        for e, r in zip(self.experiences, exps_raw):
            if (
                list(r.get("labels", e.labels)) != e.labels
                or list(r.get("new_classes", e.new_classes)) != e.new_classes
            ):
                raise DataError(
                    f"task-stream manifest is inconsistent: labels of task {e.task_id} were edited"
                )
        return self


def load_manifest(path: str | Path) -> dict:
    """Read a manifest file written by TaskStream.save_manifest."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise DataError(f"task-stream manifest {path} does not exist") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read task-stream manifest {path}: {exc}") from exc
