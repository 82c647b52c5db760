"""The library logs through stdlib logging (never print); the CLI shows INFO by default, WARNING with --quiet and
DEBUG with --verbose."""

from __future__ import annotations

import logging

from learngene.cli import main

ARGS = ["collective", "--preset", "smoke", "--set", "stream.tasks=2", "--device", "cpu"]


def test_quiet_default_and_verbose(tmp_path, capsys):
    assert main([*ARGS, "--out", str(tmp_path / "q"), "--quiet"]) == 0
    quiet = capsys.readouterr().err
    assert "task 1/2: avg acc" not in quiet

    assert main([*ARGS, "--out", str(tmp_path / "v"), "--verbose"]) == 0
    verbose = capsys.readouterr().err
    assert "task 1/2: avg acc" in verbose and "task 2/2: avg acc" in verbose  # INFO: one line per task
    assert "checkpoint " in verbose  # DEBUG: every checkpoint written
    assert logging.getLogger("learngene").level == logging.DEBUG


def test_library_logs_reach_a_users_own_handler(tmp_path, caplog):
    """Used from Python, the messages are ordinary log records (no CLI involved)."""
    from learngene.collective_run import run_collective
    from learngene.config import load_config

    logging.getLogger("learngene").propagate = True  # undo the CLI set-up of the test above
    with caplog.at_level(logging.INFO, logger="learngene"):
        run_collective(load_config("smoke", overrides=["stream.tasks=2"]), tmp_path / "run", progress=False)
    assert any("task 2/2: avg acc" in r.getMessage() for r in caplog.records)


def test_no_progress_bar_frames_in_a_redirected_log(tmp_path, capsys):
    """Issue 19 item 10: tqdm's redraws (carriage returns) ended up in stderr redirected to a file; off a terminal
    only the log lines remain."""
    assert main([*ARGS, "--out", str(tmp_path / "r")]) == 0  # no --quiet: bars wanted, but stderr is no TTY
    err = capsys.readouterr().err
    assert "task 1/2: avg acc" in err and "\r" not in err and "it/s" not in err


def test_progress_bar_draws_on_a_terminal(monkeypatch):
    import io

    from learngene.runtime import progress_bar

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Tty()
    for _ in progress_bar(range(3), desc="x", file=out, mininterval=0):
        pass
    assert "\r" in out.getvalue() and "3/3" in out.getvalue()
    off = Tty()
    for _ in progress_bar(range(3), enabled=False, file=off):
        pass
    assert off.getvalue() == ""
