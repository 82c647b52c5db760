"""Small timing harness for the benchmarks: warm-up, repeats, medians, spread, interleaving, machine record.

Everything here is plain Python + ``time.perf_counter`` so it can be tested without torch doing any work.

* :func:`measure` times one callable: ``warmup`` untimed calls, then ``repeats`` timed ones.
* :func:`interleaved` times several callables round-robin (A B C, B C A, C A B, ...), so slow drifts of a
  shared, loaded machine hit every variant alike; :func:`paired_ratio` then compares two of them round by
  round (the ratio of the two timings taken in the same round), which is far steadier than dividing two
  medians measured minutes apart.
* :class:`Timing` keeps the raw samples and reports median, quartiles (IQR), min and max.
* :func:`run_child` runs a command in a child process and returns its wall time and peak RSS
  (``ru_maxrss`` of that very process, started from a small launcher so the benchmark process's own memory
  does not leak into the number).
* :func:`machine` records CPU model, threads, torch version, device and load average.
"""

from __future__ import annotations

import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "Timing",
    "interleaved",
    "machine",
    "measure",
    "paired_ratio",
    "quantile",
    "run_child",
    "summarize",
]

Clock = Callable[[], float]


def quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default), ``q`` in [0, 1]; NaN for no values."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile q must be in [0, 1], got {q}")
    xs = sorted(float(v) for v in values)
    if not xs:
        return math.nan
    pos = q * (len(xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarize(values: Sequence[float]) -> dict[str, float]:
    """median, q1, q3, iqr, min, max, mean and n of a list of numbers."""
    xs = [float(v) for v in values]
    q1, q3 = quantile(xs, 0.25), quantile(xs, 0.75)
    return {
        "median": quantile(xs, 0.5),
        "q1": q1,
        "q3": q3,
        "iqr": q3 - q1,
        "min": min(xs) if xs else math.nan,
        "max": max(xs) if xs else math.nan,
        "mean": sum(xs) / len(xs) if xs else math.nan,
        "n": len(xs),
    }


@dataclass
class Timing:
    """Raw timed samples (seconds per call, already divided by ``per_call``) plus their summary."""

    samples: list[float] = field(default_factory=list)
    warmup: int = 0
    per_call: int = 1  # how many operations one timed call did (samples are per operation)

    @property
    def median(self) -> float:
        return quantile(self.samples, 0.5)

    @property
    def iqr(self) -> float:
        return quantile(self.samples, 0.75) - quantile(self.samples, 0.25)

    def to_dict(self) -> dict[str, Any]:
        return {
            **summarize(self.samples),
            "warmup": self.warmup,
            "repeats": len(self.samples),
            "per_call": self.per_call,
            "samples": list(self.samples),
        }


def _check_counts(warmup: int, repeats: int, per_call: int) -> None:
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if per_call < 1:
        raise ValueError(f"per_call must be >= 1, got {per_call}")


def measure(
    fn: Callable[[], Any],
    *,
    warmup: int = 1,
    repeats: int = 5,
    per_call: int = 1,
    setup: Callable[[], Any] | None = None,
    clock: Clock = time.perf_counter,
) -> Timing:
    """Call ``fn`` ``warmup`` times untimed, then ``repeats`` times timed.

    ``setup`` (untimed) runs before every call, warm-up included; if it returns something other than None,
    ``fn`` gets it as its only argument (e.g. a fresh copy of a model to widen).
    """
    return interleaved({"_": fn}, warmup=warmup, repeats=repeats, per_call=per_call,
                       setup={"_": setup} if setup else None, clock=clock)["_"]


def interleaved(
    fns: Mapping[str, Callable[..., Any]],
    *,
    warmup: int = 1,
    repeats: int = 5,
    per_call: int | Mapping[str, int] = 1,
    setup: Mapping[str, Callable[[], Any] | None] | None = None,
    clock: Clock = time.perf_counter,
) -> dict[str, Timing]:
    """Time several callables round-robin; round ``r`` starts with variant ``r mod k`` (rotation).

    Warm-up rounds run every variant ``warmup`` times first. Returns ``{name: Timing}`` in input order;
    ``Timing.samples[r]`` of every variant was taken in the same round ``r``.
    """
    names = list(fns)
    if not names:
        raise ValueError("interleaved needs at least one callable")
    per = {n: (per_call[n] if isinstance(per_call, Mapping) else per_call) for n in names}
    for n in names:
        _check_counts(warmup, repeats, per[n])
    setups = dict(setup or {})

    def call(name: str) -> float:
        prep = setups.get(name)
        arg = prep() if prep is not None else None
        fn = fns[name]
        t0 = clock()
        if arg is None:
            fn()
        else:
            fn(arg)
        return clock() - t0

    for _ in range(warmup):
        for n in names:
            call(n)
    out = {n: Timing(warmup=warmup, per_call=per[n]) for n in names}
    k = len(names)
    for r in range(repeats):
        for j in range(k):
            n = names[(r + j) % k]
            out[n].samples.append(call(n) / per[n])
    return out


def paired_ratio(a: Timing, b: Timing) -> dict[str, float]:
    """Per-round ratios ``a[r] / b[r]`` of two interleaved timings: their median, quartiles, min and max.

    ``ratio_of_medians`` (``median(a) / median(b)``) is included for reference.
    """
    if len(a.samples) != len(b.samples):
        raise ValueError(
            f"paired_ratio needs timings from the same interleaved run ({len(a.samples)} vs {len(b.samples)} samples)"
        )
    ratios = [x / y for x, y in zip(a.samples, b.samples) if y > 0]
    s = summarize(ratios)
    s["ratio_of_medians"] = a.median / b.median if b.median > 0 else math.nan
    return s


# ------------------------------------------------------------------------------------------------ machine
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: str = "cpu") -> dict[str, Any]:
    """CPU model, logical CPUs, torch threads/version, device, Python, OS and the 1/5/15-min load average."""
    info: dict[str, Any] = {
        "cpu_model": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "device": device,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }
    try:
        info["affinity_cpus"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        pass
    try:
        info["loadavg"] = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        pass
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["torch_interop_threads"] = torch.get_num_interop_threads()
        if device.startswith("cuda") and torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(device)
    return info


# ------------------------------------------------------------------------------------------------ children
# The command runs under a tiny Python launcher. Linux starts a child's ru_maxrss at the RSS of the process it
# was forked (or vforked) from, so a child started directly from a benchmark process holding torch would report
# at least that process's ~0.5 GiB. Started from the launcher (a few MiB), the number is the command's own.
_LAUNCHER = r"""
import json, os, resource, subprocess, sys, time
cmd, log, result = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
out = open(log, "wb") if log else subprocess.DEVNULL
t0 = time.perf_counter()
proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
pid, status, usage = os.wait4(proc.pid, 0)
wall = time.perf_counter() - t0
children = resource.getrusage(resource.RUSAGE_CHILDREN)
with open(result, "w") as f:
    json.dump({"wall_s": wall, "returncode": os.waitstatus_to_exitcode(status),
               "maxrss_kib": usage.ru_maxrss, "children_maxrss_kib": children.ru_maxrss,
               "user_s": usage.ru_utime, "sys_s": usage.ru_stime}, f)
"""


def run_child(
    cmd: Sequence[str],
    *,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    log: str | os.PathLike[str] | None = None,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Run ``cmd``; return its wall seconds, exit code and peak RSS in MiB.

    The peak RSS is ``ru_maxrss`` of the command's own process (``os.wait4``; ``getrusage(RUSAGE_CHILDREN)``
    of the launcher, which has waited for nothing else, is recorded too and must agree). stdout+stderr go to
    ``log`` (or are discarded). On timeout the whole process group is killed and ``timed_out`` is True.
    """
    with tempfile.TemporaryDirectory(prefix="bench-child-") as tmp:
        result = Path(tmp) / "result.json"
        launcher = [sys.executable, "-S", "-c", _LAUNCHER, json.dumps(list(map(str, cmd))),
                    str(log) if log is not None else "", str(result)]
        t0 = time.perf_counter()
        proc = subprocess.Popen(launcher, cwd=cwd, env=dict(env) if env is not None else None,
                                start_new_session=True)  # its own process group: a timeout kills both
        timed_out = False
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        outer_wall = time.perf_counter() - t0
        info = json.loads(result.read_text()) if result.is_file() else {}
    if not info and not timed_out:
        raise RuntimeError(f"the launcher for {list(cmd)} exited with {proc.returncode} and reported nothing")
    return {
        "cmd": list(cmd),
        "wall_s": info.get("wall_s", outer_wall),
        "returncode": info.get("returncode", proc.returncode),
        "timed_out": timed_out,
        "peak_rss_mib": info.get("maxrss_kib", math.nan) / 1024.0,  # Linux reports KiB
        "getrusage_children_maxrss_mib": info.get("children_maxrss_kib", math.nan) / 1024.0,
        "user_s": info.get("user_s", math.nan),
        "sys_s": info.get("sys_s", math.nan),
    }
