"""The package root is the public API: every advertised name resolves, and importing it stays light."""

import subprocess
import sys

import learngene


def test_every_public_name_resolves():
    missing = [n for n in learngene.__all__ if not hasattr(learngene, n)]
    assert not missing
    assert learngene.collective_from_config.__name__ == "from_config"


def test_import_learngene_does_not_import_torch():
    code = "import sys, learngene; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
