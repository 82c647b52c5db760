"""`learngene --help`, `--version` and `presets` answer without importing torch (it takes seconds to import)."""

import subprocess
import sys
from pathlib import Path

import pytest

PROBE = """
import sys
from learngene.cli import main
try:
    rc = main({argv!r})
except SystemExit as exc:
    rc = exc.code
print("TORCH" if "torch" in sys.modules else "NO-TORCH", rc)
"""


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["presets"], ["tune", "--help"], ["run", "--help"]])
def test_light_commands_do_not_import_torch(argv):
    out = subprocess.run([sys.executable, "-c", PROBE.format(argv=argv)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    last = out.stdout.strip().splitlines()[-1]
    assert last.split() == ["NO-TORCH", "0"], out.stdout


@pytest.mark.parametrize("checkpoint", [False, True])
def test_ctrl_c_names_the_one_command_that_works(tmp_path, monkeypatch, capsys, checkpoint):
    import learngene.collective_run as collective_run
    from learngene.cli import main

    out = tmp_path / "run"

    def interrupted(cfg, out_dir, **kwargs):
        out_dir = Path(out_dir)
        if checkpoint:
            (out_dir / "checkpoints").mkdir(parents=True)
            (out_dir / "checkpoints" / "latest.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(collective_run, "run_collective", interrupted)
    assert main(["collective", "--preset", "smoke", "--out", str(out), "--quiet", "--device", "cpu"]) == 130
    err = capsys.readouterr().err
    if checkpoint:
        assert "continue with the same command and --resume" in err
    else:
        assert "nothing was saved yet" in err and "--overwrite" in err and "continue with" not in err
