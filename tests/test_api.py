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


def test_dir_lists_the_public_api_only():
    """Issue 19 item 2: `dir(learngene)` listed the module's helpers (Any, annotations, importlib)."""
    import types

    shown = {n for n in dir(learngene) if not n.startswith("__")}
    submodules = {n for n in shown if isinstance(getattr(learngene, n), types.ModuleType)}
    assert shown - submodules == set(learngene.__all__) - {"__version__"}
    assert "predict" in shown and callable(learngene.predict)
