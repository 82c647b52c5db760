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
