"""Every table of BENCHMARKS.md that has a raw result is what bench/tables.py renders from bench/results."""

from __future__ import annotations

import pytest

from bench.tables import BENCHMARKS, TABLES, blocks, main, render_all, speed_table


def test_every_marked_table_is_rendered_from_bench_results():
    text = BENCHMARKS.read_text()
    marked = blocks(text)
    assert set(TABLES) <= set(marked), f"not marked in BENCHMARKS.md: {sorted(set(TABLES) - set(marked))}"
    fresh = blocks(render_all(text))
    stale = [name for name in marked if marked[name] != fresh[name]]
    assert not stale, f"run `python -m bench.tables`: these tables differ from bench/results: {stale}"


def test_speed_table_is_the_one_bench_speed_wrote():
    text = BENCHMARKS.read_text()
    section = text[text.index("## Speed\n") : text.index("\n## ", text.index("## Speed\n") + 1)]
    assert "\n".join(line for line in section.splitlines() if line.startswith("|")) == speed_table()


def test_check_fails_on_an_edited_number(tmp_path, capsys):
    text = BENCHMARKS.read_text()
    edited = tmp_path / "B.md"
    edited.write_text(text.replace("| 20-way 1-shot | 0.675 ±0.027 |", "| 20-way 1-shot | 0.695 ±0.027 |", 1))
    assert edited.read_text() != text
    assert main(["--check", "--file", str(edited)]) == 1 and "seeds-accuracy" in capsys.readouterr().err
    edited.write_text(text)
    assert main(["--check", "--file", str(edited)]) == 0
    edited.write_text(text + "\n<!-- table: nope -->\n<!-- /table -->\n")
    with pytest.raises(KeyError, match="nope"):
        main(["--check", "--file", str(edited)])
