"""The README's Python quickstart runs as printed, and `learngene predict` reads the model it saves."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image

from learngene.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"


def _quickstart() -> str:
    text = README.read_text()
    section = text.split("## Python quickstart", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the quickstart section must hold exactly one python block"
    return blocks[0]


def test_readme_quickstart_runs_and_predict_reads_its_model(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(_quickstart(), str(README), "exec"), namespace)  # noqa: S102 - our own README
    assert (tmp_path / "out" / "gene" / "learngene.json").is_file()
    Image.fromarray((np.random.default_rng(0).random((16, 16)) * 255).astype("uint8")).save(tmp_path / "photo.png")
    capsys.readouterr()
    assert main(["predict", "--model", str(tmp_path / "out" / "model"), str(tmp_path / "photo.png"), "--json"]) == 0
    out = capsys.readouterr().out
    assert any(c in out for c in namespace["novel"])
