"""The benchmark harness (warm-up, repeats, medians, interleaving, child processes) and a --quick speed run."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from bench import harness
from bench.harness import Timing, interleaved, measure, paired_ratio, quantile, run_child, summarize


class FakeClock:
    """Each call advances time by the duration the timed function asked for (no sleeping, exact numbers)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def spend(self, seconds: float) -> None:
        self.now += seconds


def test_quantile_and_summary():
    assert quantile([3, 1, 2], 0.5) == 2
    assert quantile([1, 2, 3, 4], 0.5) == 2.5
    assert quantile([1, 2, 3, 4, 5], 0.25) == 2
    assert quantile([7], 0.75) == 7
    s = summarize([1, 2, 3, 4, 100])
    assert (s["median"], s["q1"], s["q3"], s["iqr"], s["min"], s["max"], s["n"]) == (3, 2, 4, 2, 1, 100, 5)
    with pytest.raises(ValueError):
        quantile([1], 1.5)


def test_measure_warms_up_then_repeats_and_takes_the_median():
    clock = FakeClock()
    durations = iter([10.0, 9.0, 1.0, 3.0, 2.0, 50.0, 4.0])  # two warm-up calls, then five timed ones
    calls = []

    def fn() -> None:
        calls.append(1)
        clock.spend(next(durations))

    t = measure(fn, warmup=2, repeats=5, clock=clock)
    assert len(calls) == 7
    assert t.samples == [1.0, 3.0, 2.0, 50.0, 4.0]  # the slow warm-up calls are not in the samples
    assert t.median == 3.0
    assert t.iqr == 2.0  # q1 = 2, q3 = 4: the 50 s outlier does not move the spread much
    d = t.to_dict()
    assert d["warmup"] == 2 and d["repeats"] == 5 and d["min"] == 1.0 and d["max"] == 50.0


def test_measure_per_call_and_setup():
    clock = FakeClock()
    made = []

    def setup() -> list[int]:
        made.append(1)
        clock.spend(100.0)  # setup is not timed
        return [4]

    def fn(arg: list[int]) -> None:
        clock.spend(arg[0])

    t = measure(fn, warmup=1, repeats=3, per_call=4, setup=setup, clock=clock)
    assert len(made) == 4  # before the warm-up call too
    assert t.samples == [1.0, 1.0, 1.0]  # 4 s per call / 4 operations per call


def test_interleaved_rotates_order_and_pairs_rounds():
    clock = FakeClock()
    order: list[str] = []

    def make(name: str, cost: float):
        def fn() -> None:
            order.append(name)
            clock.spend(cost)

        return fn

    t = interleaved({"a": make("a", 2.0), "b": make("b", 1.0), "c": make("c", 4.0)}, warmup=1, repeats=3,
                    clock=clock)
    assert order == ["a", "b", "c", "a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert [len(v.samples) for v in t.values()] == [3, 3, 3]
    r = paired_ratio(t["a"], t["b"])
    assert r["median"] == 2.0 and r["iqr"] == 0.0 and r["ratio_of_medians"] == 2.0


def test_paired_ratio_uses_same_round_pairs():
    a = Timing(samples=[2.0, 20.0, 4.0])
    b = Timing(samples=[1.0, 10.0, 4.0])  # round 2 was slow for both: the per-round ratio is still 2
    r = paired_ratio(a, b)
    assert r["median"] == 2.0 and r["min"] == 1.0 and r["max"] == 2.0
    with pytest.raises(ValueError):
        paired_ratio(a, Timing(samples=[1.0]))


def test_bad_counts_are_refused():
    with pytest.raises(ValueError):
        measure(lambda: None, repeats=0)
    with pytest.raises(ValueError):
        measure(lambda: None, warmup=-1)
    with pytest.raises(ValueError):
        interleaved({})


def test_run_child_reports_wall_time_rc_and_peak_rss(tmp_path):
    code = "import time; b = bytearray(200 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096]); time.sleep(0.05)"
    small = run_child([sys.executable, "-c", "pass"])
    big = run_child([sys.executable, "-c", code], log=tmp_path / "log.txt")
    assert big["returncode"] == 0 and not big["timed_out"]
    assert big["wall_s"] >= 0.05
    assert big["peak_rss_mib"] > 180  # the 200 MiB buffer was touched
    assert small["peak_rss_mib"] < big["peak_rss_mib"] - 150  # per child, not the max over all children
    failed = run_child([sys.executable, "-c", "import sys; sys.exit(3)"])
    assert failed["returncode"] == 3
    slow = run_child([sys.executable, "-c", "import time; time.sleep(30)"], timeout=0.3)
    assert slow["timed_out"] and slow["wall_s"] < 10


def test_machine_record():
    import torch  # noqa: F401  (so the torch fields are filled)

    m = harness.machine("cpu")
    assert m["cpu_model"] and m["logical_cpus"] >= 1 and m["device"] == "cpu"
    assert m["torch"] and m["torch_threads"] >= 1


def test_speed_quick_runs_in_seconds(tmp_path):
    from bench.speed import main, update_benchmarks_md

    tick = time.perf_counter()
    res = main(["--quick", "--skip", "e2e", "--out", str(tmp_path)])
    elapsed = time.perf_counter() - tick
    assert elapsed < 60, f"--quick took {elapsed:.0f} s"
    saved = json.loads((tmp_path / "speed.json").read_text())
    assert saved["quick"] and saved["machine"]["cpu_model"]
    for case in saved["fisher"]["cases"]:
        assert max(case["max_abs_diff_vs_loop"].values()) < 1e-5
        assert case["timings"]["loop"]["repeats"] >= 2
    assert saved["recorder"]["overhead"]["median"] == pytest.approx(res["recorder"]["overhead"]["median"])
    assert {"library", "bare", "library_no_recorder"} <= set(saved["loop"]["timings_per_step"])
    assert (tmp_path / "growth_step_time.png").stat().st_size > 1000
    md = (tmp_path / "speed.md").read_text()
    assert md.startswith("## Speed\n\n```bash\npython -m bench.speed --quick --skip e2e --out ")
    assert "| measurement | median | spread | ratio | target | met? |" in md

    # the section is replaced in place; other sections stay
    bm = tmp_path / "BENCHMARKS.md"
    bm.write_text("# Benchmarks\n\n## Speed\n\nold\n\n## Accuracy\n\nkeep me\n")
    update_benchmarks_md(bm, md)
    text = bm.read_text()
    assert "old" not in text and "keep me" in text and text.count("## Speed") == 1
    assert text.index("## Speed") < text.index("## Accuracy")


def test_speed_rejects_unknown_section(tmp_path):
    from bench.speed import main

    with pytest.raises(SystemExit):
        main(["--quick", "--skip", "nope", "--out", str(tmp_path)])


def test_results_folder_is_inside_bench():
    assert (Path(__file__).resolve().parents[1] / "bench" / "harness.py").is_file()


def test_seeds_pool_pairs_tasks_and_keeps_seed_variation():
    from bench.seeds import markdown, pool

    def seed(s, learngene, scratch, joint):
        methods = {"learngene": {"accuracies": learngene, "params": 10},
                   "scratch": {"accuracies": scratch, "params": 10},
                   "joint": {"accuracies": joint, "params": 20}}
        return {"seed": s, "individual": {"settings": {"5way1shot": {"methods": methods}}},
                "gene": {"layers": ["features.0"], "params": 5, "effective_params": 5},
                "collective": {"final": {"params": 20, "effective_params": 20, "widths": [4], "effective_widths": [4],
                                         "average_accuracy": 0.9, "average_accuracy_class_incremental": 0.5}}}

    per_seed = [seed(0, [0.6, 0.7], [0.5, 0.6], [0.7, 0.7]), seed(1, [0.9, 0.8], [0.8, 0.7], [0.9, 0.9]),
                seed(2, [0.7, 0.8], [0.6, 0.7], [0.8, 0.8])]
    rows = pool(per_seed)["5way1shot"]
    lg = rows["learngene"]
    assert lg["acc_mean"] == pytest.approx(0.75) and lg["n"] == 6 and lg["seeds"] == 3
    assert lg["seed_means"] == pytest.approx([0.65, 0.85, 0.75])
    # the interval over the 3 seed means (t with 2 df), not over the 6 tasks
    assert lg["seed_ci95"] == pytest.approx(4.303 * 0.1 / 3 ** 0.5)
    assert lg["seed_ci95"] > lg["acc_ci95"] > 0
    # every paired difference is exactly +0.1: the paired CI is 0 although the accuracies vary a lot
    assert lg["gain_vs_scratch"] == pytest.approx(0.1) and lg["gain_ci95"] == pytest.approx(0.0, abs=1e-12)
    assert lg["gain_seed_ci95"] == pytest.approx(0.0, abs=1e-12) and lg["gain_significant"]
    assert lg["gap_to_joint"] == pytest.approx(-0.05)
    assert "gain_vs_scratch" not in rows["scratch"] and "gap_to_joint" not in rows["joint"]
    two = pool(per_seed[:2])["5way1shot"]["learngene"]  # two seeds: no interval over seeds, and no verdict
    assert two["seed_ci95"] != two["seed_ci95"] and not two["gain_significant"]
    assert "no CI (n = 2 < 3)" in markdown(per_seed[:2], pool(per_seed[:2]))
    assert "| learngene | 0.750" in markdown(per_seed, pool(per_seed))
