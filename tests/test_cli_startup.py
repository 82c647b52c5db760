"""`learngene --help`, `--version` and `presets` answer without importing torch (it takes seconds to import)."""

import subprocess
import sys

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
