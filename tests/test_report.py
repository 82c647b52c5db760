"""report.md says what its numbers mean: no CI on too few episodes, the gene's shares, paired gains."""

import math

import pytest

from learngene.report import methods_table, render


def _row(n, acc=0.8, ci=0.05, gain=None):
    r = {"acc_mean": acc, "acc_ci95": ci, "n": n, "params": 100, "inherited_params": 40,
         "epochs_to_90pct_final": 5, "train_seconds_mean": 0.1}
    if gain is not None:
        r["vs_scratch"] = {"mean": gain, "ci95": 0.02, "n": n, "ci_excludes_0": True}
    return r


def test_no_confidence_interval_on_too_few_episodes():
    few = methods_table({"learngene": _row(2, ci=1.27, gain=0.1), "scratch": _row(2)})
    assert "±1.270" not in few and "n = 2: too few for a CI" in few
    many = methods_table({"learngene": _row(30, gain=0.1), "scratch": _row(30)})
    assert "±0.050" in many and "+0.100 ±0.020 * |" in many and "n = 30 tasks per row" in many
    high = methods_table({"learngene": _row(30, acc=0.98, ci=0.05)})
    assert "[0.930, 1.000]" in high and "±0.050" not in high  # an accuracy's interval stops at 1


def test_method_tables_stay_narrow():
    """Issue 19 item 9: rows were about 150 characters wide."""
    methods = {"gene-random-layers (= learngene)": {**_row(36, gain=-0.1234), "params": 1_234_567,
                                                    "inherited_params": 1_000_000, "train_seconds_mean": 123.45},
               "scratch": _row(36)}
    assert max(len(line) for line in methods_table(methods).splitlines()) <= 110


def test_report_states_gene_shares_and_what_epochs_to_90_means():
    methods = {"learngene": _row(30, gain=0.1), "scratch": _row(30)}
    report = {
        "data": "glyphs", "seed": 0, "version": "x",
        "split": {"source": ["a"], "open_world": [], "novel": ["b"]},
        "collective": {"n_tasks": 2, "open_world": None, "memory": {"per_class": 0, "images": 0},
                       "final": {"average_accuracy": 0.9, "forgetting": 0.0, "params": 200, "widths": [4],
                                 "effective_widths": [4], "effective_params": 200,
                                 "tolerance": {"rtol": 1e-5, "atol": 1e-7}}},
        "gene": {"layers": ["features.0"], "params": 40, "effective_params": 40},
        "criterion": {"name": "fixed", "selected": ["features.0"], "reason": "r", "candidates": []},
        "individual": {"headline": "5way1shot", "methods": methods, "episodes_per_seed": 30, "seeds": [0],
                       "queries_per_class": 5, "ci": "ci", "settings": {"5way1shot": {"methods": methods}}},
    }
    text = render(report)
    assert "20% of the collective's effective parameters" in text
    assert "40% of the headline individual model's 100" in text
    assert '"epochs to 90%" is the first evaluated epoch' in text
    assert "one collective model (seed 0): every interval here is over its target tasks" in text


def test_plots_leave_the_backend_alone_and_mark_copies(tmp_path):
    import matplotlib

    from learngene.plots import plot_criterion, plot_curves

    backend = matplotlib.get_backend()
    fig = plot_curves({"learngene": ([1, 2], [0.5, 0.6]), "gene-bottom": ([1, 2], [0.5, 0.6]),
                       "scratch": ([1, 2], [0.4, 0.5])}, tmp_path / "c.png", aliases={"gene-bottom": "learngene"},
                      references={"joint": 0.7})
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["learngene (= gene-bottom)", "scratch", "joint"]  # the copy draws no line over the original
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    cands = [{"layers": ["features.0"], "score": 0.5}, {"layers": ["features.0", "features.1"], "score": 0.8}]
    fig = plot_criterion(cands, ["features.0", "features.1"], tmp_path / "k.png")
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert any("0.800" in t and "chosen" in t for t in texts) and not any("0.500" in t and "chosen" in t for t in texts)
    assert matplotlib.get_backend() == backend


def test_every_plot_labels_its_axes_and_counts_epochs_and_tasks_in_integers(tmp_path):
    """Issue 11 item 14: every axis labelled; epochs and tasks never get a tick at 2.5."""
    from learngene.plots import plot_bars, plot_criterion, plot_curves, plot_forgetting_curve, plot_params

    tasks = [{"task": t, "params": 1000 * (t + 1), "average_accuracy_class_incremental": 0.5} for t in range(3)]
    report = {"tasks": tasks, "average_accuracy_curve": [0.9, 0.8, 0.7], "forgetting_curve": [0.0, 0.1, 0.2]}
    figs = {
        "curves": plot_curves({"a": ([1, 2, 3], [0.1, 0.5, 0.6])}),
        "forgetting": plot_forgetting_curve(report),
        "params": plot_params(report),
        "bars": plot_bars({"a": 0.5, "b": 0.6}, {"a": 0.1, "b": 0.1}),
        "criterion": plot_criterion([{"layers": ["features.0"], "score": 0.5}], ["features.0"]),
    }
    for name, fig in figs.items():
        ax = fig.axes[0]
        assert ax.get_xlabel() and ax.get_ylabel(), name
        if name in ("curves", "forgetting", "params"):
            ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
            assert ticks and all(float(t).is_integer() for t in ticks), (name, ticks)


def test_error_bars_stay_within_0_and_1(tmp_path):
    from learngene.plots import plot_bars

    fig = plot_bars({"high": 0.98, "low": 0.02, "mid": 0.5, "none": 0.5},
                    {"high": 0.05, "low": 0.05, "mid": 0.05, "none": float("nan")}, tmp_path / "b.png")
    segments = fig.axes[0].collections[0].get_segments()  # the (horizontal) error bars
    ys = [x for seg in segments for x, _ in seg]
    assert min(ys) >= 0.0 and max(ys) <= 1.0
    assert max(ys) == 1.0 and min(ys) == 0.0 and 0.55 in [round(y, 6) for y in ys]


def test_tradeoff_plot_draws_each_method_once_with_clipped_intervals_and_the_frontier(tmp_path):
    from learngene.plots import plot_tradeoff

    rows = {
        "learngene": {"acc_mean": 0.80, "acc_ci95": 0.05, "params": 1000, "train_seconds_mean": 0.5},
        "gene-bottom": {"acc_mean": 0.80, "acc_ci95": 0.05, "params": 1000, "same_as": "learngene"},
        "scratch": {"acc_mean": 0.60, "acc_ci95": 0.05, "params": 1000, "train_seconds_mean": 0.4},
        "finetune": {"acc_mean": 0.97, "acc_ci95": 0.10, "params": 5000, "train_seconds_mean": 0.9},
        "ncm-gene": {"acc_mean": 0.70, "acc_ci95": float("nan"), "params": 800, "train_seconds_mean": 0.01},
    }
    fig = plot_tradeoff(rows, "params", tmp_path / "t.png")
    ax = fig.axes[0]
    names = [t.get_text() for t in ax.texts]
    assert sorted(names) == ["finetune", "learngene", "ncm-gene", "scratch"]  # the copy is drawn once
    assert ax.get_xlabel() and ax.get_ylabel() and ax.get_xscale() == "linear"  # 800 to 5,000: under a decade
    assert ax.get_ylim()[1] <= 1.0  # finetune's 0.97 +- 0.10 is clipped at 1
    frontier = [line for line in ax.get_lines() if line.get_linestyle() == "--"][0]
    assert list(frontier.get_xdata()) == [800.0, 1000.0, 5000.0]  # scratch is dominated by learngene
    assert (tmp_path / "t.png").read_bytes()[:4] == b"\x89PNG"
    fig = plot_tradeoff(rows, "train_seconds_mean")
    assert "seconds" in fig.axes[0].get_xlabel()
    rows["finetune"]["params"] = 50_000  # costs over more than a decade: a log axis
    assert plot_tradeoff(rows, "params").axes[0].get_xscale() == "log"


def test_tradeoff_labels_of_coinciding_points_do_not_overlap():
    from learngene.plots import plot_tradeoff

    rows = {m: {"acc_mean": 0.90 + 0.001 * i, "acc_ci95": 0.02, "params": 174_480 + 10 * i}
            for i, m in enumerate(["joint", "protonet", "ncm-collective", "finetune"])}
    rows["learngene"] = {"acc_mean": 0.92, "acc_ci95": 0.02, "params": 120_000}
    ax = plot_tradeoff(rows, "params").axes[0]
    offsets = [t.xyann for t in ax.texts if t.get_text() != "learngene"]
    assert len({y for _, y in offsets}) == 4  # four near-identical points, four label heights


def _ind(diff, ci, n=20, best=None):
    rows = {"learngene": {"acc_mean": 0.80, "params": 100, "vs_scratch": {"mean": diff, "ci95": ci, "n": n}},
            "scratch": {"acc_mean": 0.80 - diff, "params": 100}}
    if best:
        rows[best] = {"acc_mean": 0.90, "params": 900}
    return {"headline": "5way1shot", "methods": rows}


def test_headline_verdict_says_who_wins_by_how_much_and_whether_the_ci_excludes_0():
    from learngene.report import headline_verdict

    win = headline_verdict(_ind(0.05, 0.02))
    assert "`learngene` wins" in win and "+5.0 points" in win and "+3.0 to +7.0" in win and "excluding 0" in win
    lose = headline_verdict(_ind(-0.06, 0.02, best="finetune"))
    assert "`learngene` loses" in lose and "-6.0 points" in lose and "excluding 0" in lose
    assert "best row is `finetune`" in lose and "10.0 points above" in lose
    tie = headline_verdict(_ind(0.01, 0.03))
    assert "no clear winner" in tie and "including 0" in tie
    few = headline_verdict(_ind(0.2, 0.5, n=2))
    assert "too few to tell" in few
    assert headline_verdict({"headline": "5way1shot", "methods": {}}).startswith("At the headline setting")


def _overlapping(labels) -> list[tuple[str, str]]:
    boxes = [(t.get_text(), t.get_window_extent()) for t in labels if t.get_text()]
    return [(a, b) for i, (a, x) in enumerate(boxes) for b, y in boxes[i + 1:] if x.overlaps(y)]


def test_accuracy_bars_name_every_method_once_without_overlap(tmp_path):
    """Issue 19 item 9: the labels of accuracy_5way1shot.png overlapped, and gene-bottom, a copy of the learngene
    run, had a bar of its own."""
    from learngene.evaluate import list_methods
    from learngene.plots import plot_bars

    names = [*list_methods(), "a-method-with-a-long-registered-name"]
    means = {n: 0.5 + 0.02 * i for i, n in enumerate(names)}
    fig = plot_bars(means, {n: 0.05 for n in names}, tmp_path / "b.png", aliases={"gene-bottom": "learngene"})
    ax = fig.axes[0]
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert "learngene (= gene-bottom)" in labels and "gene-bottom" not in labels
    assert len(ax.patches) == len(names) - 1  # one bar per distinct run
    assert not _overlapping(ax.get_yticklabels() + ax.get_xticklabels())


def test_criterion_plot_names_layers_as_the_report_does_on_a_unit_axis(tmp_path):
    from learngene.plots import plot_criterion

    cands = [{"layers": ["features.0"], "score": 1.0}, {"layers": ["features.0", "features.1"], "score": 0.8}]
    ax = plot_criterion(cands, ["features.0"], tmp_path / "k.png").axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["features.0", "features.0, features.1"]
    assert ax.get_xlim() == (0.0, 1.0)  # a score in [0, 1] on a [0, 1] axis, labels outside the bars
    # gradient_stability scores are -(mean + std): negative, and still on the axis
    neg = [{"layers": ["features.1"], "score": -0.2}, {"layers": ["features.2"], "score": -0.05}]
    ax = plot_criterion(neg, ["features.2"]).axes[0]
    low, high = ax.get_xlim()
    assert low < -0.2 and high >= 0.0


def test_tasks_are_counted_from_1_in_every_plot(tmp_path):
    """Issue 19 item 9: the accuracy matrix and the gradient heatmap said 0-7 where the console said 1-8."""
    import torch

    from learngene.collective.recorder import GradientRecorder
    from learngene.plots import plot_accuracy_matrix

    ax = plot_accuracy_matrix([[0.9, None, None], [0.8, 0.7, None], [0.6, 0.7, 0.8]]).axes[0]
    ax.figure.canvas.draw()
    shown = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    assert shown == ["1", "2", "3"]
    assert [t.get_text() for t in ax.get_yticklabels() if t.get_text()][0] == "1"

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3))
    rec = GradientRecorder()
    rec.attach(model)
    for t in range(3):
        model[0].weight.grad = torch.ones_like(model[0].weight)
        rec.after_backward()
        rec.end_epoch(task=t, epoch=0)
    ax = rec.plot_heatmap(tmp_path / "h.png").axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "3"]


def test_expected_calibration_error():
    from learngene.stats import expected_calibration_error as ece

    assert ece([1.0, 1.0, 1.0, 1.0], [True, False, True, False]) == 0.5  # sure of every answer, right half the time
    assert ece([0.5, 0.5, 0.9] * 10, [True, False, True] * 10) == pytest.approx(0.1 / 3)
    assert ece([0.75] * 4, [True, True, True, False]) == 0.0
    assert math.isnan(ece([], []))
