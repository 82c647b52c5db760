"""The package's shape: data flows one way, nothing imports a later stage, and there is one atomic writer.

The stages, in order (the README's architecture section states the same):
foundation -> data -> models -> engine -> collective -> criterion -> gene -> individual -> evaluate -> runs -> CLI.
Every import counts, including those inside functions (a lazy import of a later stage is still a backward edge)
and those made by name through ``importlib`` / ``__import__`` (a string naming a learngene module in a file that
imports by name).  A module's private names (``_x``) stay in it: no module imports another's.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "learngene"

# stage of each module (prefix match: a package covers its modules); lower stages never import higher ones
STAGES: list[tuple[int, tuple[str, ...]]] = [
    (0, ("learngene", "learngene.errors", "learngene.faults", "learngene.runtime", "learngene.safeio",
         "learngene.output_dirs",
         "learngene.artifacts", "learngene.registry", "learngene.vit_config", "learngene.config", "learngene.stats",
         "learngene.config_rules", "learngene.config_sections",
         "learngene.plots", "learngene.distributed", "learngene.checkpoint", "learngene.shipped")),
    (1, ("learngene.data", "learngene.prepare")),
    (2, ("learngene.models",)),
    (3, ("learngene.engine", "learngene.vit.train")),
    (4, ("learngene.collective", "learngene.vit.auxiliary", "learngene.vit.ancestry")),
    (5, ("learngene.criterion", "learngene.vit.linearity")),
    (6, ("learngene.gene", "learngene.gene_format", "learngene.vit.gene", "learngene.vit.frequency")),
    (7, ("learngene.individual", "learngene.vit.descendants", "learngene.vit.criterion", "learngene.vit.inherit",
         "learngene.vit.fewshot",
         "learngene.kinds", "learngene.prediction")),
    (8, ("learngene.evaluate", "learngene.evaluation_summary", "learngene.baselines", "learngene.vit.methods")),
    (9, ("learngene.report", "learngene.collective_run", "learngene.run", "learngene.tune", "learngene.vit",
         "learngene.vit.run", "learngene.vit.report", "learngene.vit.compare")),
    (10, ("learngene.cli", "learngene.cli_common", "learngene.cli_stages", "learngene.__main__")),
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _stage(module: str) -> int:
    best = None
    for stage, prefixes in STAGES:
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (stage, len(prefix))
    assert best is not None, f"{module} has no stage: add it to STAGES (and to the README's architecture)"
    return best[0]


def _type_only(tree: ast.Module) -> set[int]:
    """ids of import nodes under ``if TYPE_CHECKING:`` (for type checkers only, never run)."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING":
            out |= {id(n) for child in node.body for n in ast.walk(child)}
    return out


def _module_exists(name: str) -> bool:
    rel = Path(*name.split("."))
    return (PACKAGE.parent / rel).with_suffix(".py").is_file() or (PACKAGE.parent / rel / "__init__.py").is_file()


def _by_name(tree: ast.Module) -> set[str]:
    """Modules a file may import by name: every string naming a learngene module, in a file that calls
    ``importlib.import_module`` / ``__import__`` (the string may reach the call through a table)."""
    calls = any(isinstance(n, ast.Call) and getattr(n.func, "attr", getattr(n.func, "id", None))
                in ("import_module", "__import__") for n in ast.walk(tree))
    if not calls:
        return set()
    return {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and n.value.startswith("learngene.") and _module_exists(n.value)}


# the package's face re-exports the public API lazily, by name (learngene/__init__.py's _API table): it is the
# one module allowed to name later stages, because nothing in the package imports it for more than __version__
FACADE = "learngene"


def _imports(path: Path, module: str) -> set[str]:
    tree = ast.parse(path.read_text())
    skip = _type_only(tree)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("learngene")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("learngene"):
                if target == "learngene":  # from learngene import x: x may be a submodule
                    found |= {f"learngene.{a.name}" if (PACKAGE / f"{a.name}.py").exists()
                              or (PACKAGE / a.name).is_dir() else "learngene" for a in node.names}
                else:
                    found.add(target)
    if module != FACADE:
        found |= _by_name(tree)
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {m: {t for t in _imports(p, m) if t != m} for m, p in modules.items()}


def test_no_module_imports_a_later_stage():
    backwards = [f"{m} (stage {_stage(m)}) imports {t} (stage {_stage(t)})"
                 for m, targets in _graph().items() for t in targets if _stage(t) > _stage(m)]
    assert not backwards, "\n".join(sorted(backwards))


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph:
                continue
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    # the package's own __init__ re-exports lazily (no static edge); any other cycle is a design error
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_the_structure_test_sees_imports_by_name(tmp_path):
    tree = ast.parse("import importlib\nBUILTINS = ('learngene.evaluate',)\n"
                     "def load():\n    for m in BUILTINS:\n        importlib.import_module(m)\n")
    assert _by_name(tree) == {"learngene.evaluate"}
    assert _by_name(ast.parse("X = 'learngene.evaluate'")) == set()  # a mere mention, nothing imported


def _private_imports() -> list[str]:
    found = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("learngene"):
                found += [f"{_module_name(path)} imports {node.module}.{a.name}" for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")]
    return found


def test_no_module_imports_another_modules_private_names():
    assert not _private_imports(), "\n".join(_private_imports())


def test_one_atomic_writer():
    """Only safeio writes files: every other module goes through atomic_write_bytes/json (fsync, rename)."""
    writers = re.compile(r"\b(write_text|write_bytes|save_file|os\.replace|torch\.save)\(|\.savefig\((?!buf)")
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "safeio.py":
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if writers.search(code):
                offenders.append(f"{path.relative_to(PACKAGE)}:{i}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


STAGE_NAMES = ("foundation", "data", "models", "engine", "collective", "criterion", "gene", "individual", "evaluate",
               "runs", "CLI")


def _readme_rows() -> dict[str, str]:
    """The README's architecture table: stage name -> the text of its "modules" cell."""
    readme = PACKAGE.parents[1] / "README.md"
    rows = {}
    for line in readme.read_text().splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) == 5 and cells[1] in STAGE_NAMES:
            rows[cells[1]] = cells[2]
    return rows


def test_the_readme_architecture_table_names_every_module_in_its_stage():
    """Every module is listed in the README's table on its stage's row (a package's modules inside ``pkg/ (...)``,
    the ViT ones as ``vit/x``; plugins are ``plugins/`` one per file)."""
    rows = _readme_rows()
    assert set(rows) == set(STAGE_NAMES), f"README architecture rows: {sorted(rows)}"
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        parts = module.split(".")[1:]
        if not parts or path.name in ("__init__.py", "__main__.py"):
            continue
        if parts[:2] == ["collective", "plugins"]:
            short = "plugins/"
        elif parts[0] == "vit":
            short = "/".join(parts)
        else:
            short = parts[-1]
        row = STAGE_NAMES[_stage(module)]
        if f"`{short}`" not in rows[row]:
            missing.append(f"{module}: `{short}` not in the README's {row} row")
    assert not missing, "\n".join(missing)
