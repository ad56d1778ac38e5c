"""The package's import structure (docs/ARCHITECTURE.md, "Layers"), read with `ast` from the source files.

- no import cycle between modules, counting imports deferred into functions (deferring hides a cycle, it
  does not remove it), and none between packages;
- every import goes down the layer order or stays in its layer;
- an own-module import inside a function is allowed only where it is listed below with its reason, and
  carries a comment saying why;
- every file is between 60 and 350 lines, except package `__init__`s and the entry points listed below.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "nemotron_elastic"
NAME = PACKAGE.name

# Lowest first. A module imports only from its own layer or a lower one. `__main__` modules are entry
# points and sit on top wherever they are.
LAYERS: list[set[str]] = [
    {"config", "io"},
    {"model"},
    {"subnet"},
    {"router", "importance", "data", "checkpoint"},
    {"train", "export"},
    {"eval", "serve"},
    {"commands", "cli", "demo", "__main__", ""},  # "": the package itself (its lazy public API)
]
FORBIDDEN = {
    ("eval", "serve"): "decoding shared by both belongs with the model",
    ("serve", "eval"): "serving does not depend on evaluation",
}

# Own-module imports deferred into a function, with the reason they may be. Keys are (module, imported
# module) with the package prefix left out.
DEFERRED = {
    # The command line answers `--help` without importing torch: each command imports what it runs.
    **{(f"commands.{m}", "*"): "the CLI's --help must not import torch" for m in
       ("demo", "evaluate", "models", "pipeline", "serve")},
    # lm-eval is an optional extra, and heavy: only `eval --tasks` imports it.
    ("eval.runner", "eval.lm_eval_model"): "lm-eval is optional",
    ("eval.runner", "eval.lm_eval_tasks"): "lm-eval is optional",
    ("eval.lm_eval_main", "eval.lm_eval_model"): "lm-eval is optional",
    ("eval.lm_eval_main", "eval.lm_eval_tasks"): "lm-eval is optional",
}

# Files that may be shorter than 60 lines: entry points and lm-eval's task hook.
SHORT_ENTRY_POINTS = {"__main__.py", "serve/__main__.py", "eval/tasks/nemotron_tasks.py"}
REMOTE_CODE = "checkpoint/remote_code"  # templates copied into exports; they import only torch and transformers


def _modules() -> dict[str, Path]:
    mods = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.as_posix().startswith(REMOTE_CODE) and path.name not in ("__init__.py", "writer.py"):
            continue
        parts = rel.with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = path
    return mods


MODULES = _modules()


def _targets(module: str, node: ast.ImportFrom | ast.Import) -> list[str]:
    """Own modules an import statement reaches (package prefix left out)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        if node.level:
            base = module.split(".") if module else []
            if MODULES[module].name != "__init__.py":
                base = base[:-1]
            base = base[: len(base) - node.level + 1]
            mod = ".".join(base + ([node.module] if node.module else []))
        else:
            mod = node.module or ""
            if not (mod == NAME or mod.startswith(NAME + ".")):
                return []
            mod = mod[len(NAME) + 1:]
        names = [f"{mod}.{a.name}".strip(".") if f"{mod}.{a.name}".strip(".") in MODULES else mod for a in node.names]
    return [n for n in names if n in MODULES and n != module]


def _imports() -> list[tuple[str, str, bool, int, str]]:
    """(module, target, deferred, line, comment) for every own-module import."""
    out = []
    for module, path in MODULES.items():
        lines = path.read_text().splitlines()
        tree = ast.parse("\n".join(lines))
        top = {id(n) for n in tree.body}
        type_only = {  # `if TYPE_CHECKING:` blocks are never run
            id(n) for stmt in tree.body
            if isinstance(stmt, ast.If) and "TYPE_CHECKING" in ast.unparse(stmt.test) for n in ast.walk(stmt)
        }
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in type_only:
                for target in _targets(module, node):
                    comment = " ".join(
                        line.split("#", 1)[1] for line in lines[max(0, node.lineno - 3): node.end_lineno] if "#" in line
                    )
                    out.append((module, target, id(node) not in top, node.lineno, comment))
    return out


IMPORTS = _imports()


def _package(module: str) -> str:
    """The top-level package or module; every `__main__` entry point counts as one node of its own."""
    return "__main__" if module.endswith("__main__") else module.split(".")[0]


def _layer(module: str) -> int:
    key = _package(module)
    for i, layer in enumerate(LAYERS):
        if key in layer:
            return i
    raise AssertionError(f"{module}: its package {key!r} has no layer in LAYERS; add it there")


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles_between_modules():
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for module, target, *_ in IMPORTS:
        # a package __init__ re-exporting its own children is no cycle a reader trips over
        if not (MODULES[module].name == "__init__.py" and target.startswith(module + ".")):
            graph[module].add(target)
        if MODULES[target].name == "__init__.py" and not module.startswith(target + "."):
            graph[module].add(target)
    assert _cycles(graph) == []


def test_no_import_cycles_between_packages():
    graph: dict[str, set[str]] = {}
    for module, target, *_ in IMPORTS:
        if _package(module) != _package(target):
            graph.setdefault(_package(module), set()).add(_package(target))
    assert _cycles(graph) == []


def test_imports_follow_the_layer_order():
    wrong = [
        f"{module} (layer {_layer(module)}) imports {target} (layer {_layer(target)}), line {line}"
        for module, target, _, line, _ in IMPORTS
        if _layer(target) > _layer(module)
    ]
    wrong += [
        f"{module} imports {target}: {why}"
        for module, target, *_ in IMPORTS
        for (low, high), why in FORBIDDEN.items()
        if _package(module) == low and _package(target) == high
    ]
    assert wrong == []


def _allowed(module: str, target: str) -> bool:
    return (module, target) in DEFERRED or (module, "*") in DEFERRED


def test_deferred_imports_are_listed_and_commented():
    unlisted = [f"{m} -> {t} (line {line})" for m, t, deferred, line, _ in IMPORTS if deferred and not _allowed(m, t)]
    assert unlisted == [], "own-module imports inside functions; import at the top or list them in DEFERRED"
    listed = {(m, t) for m, t, deferred, *_ in IMPORTS if deferred}
    stale = [key for key in DEFERRED if key[1] != "*" and key not in listed]
    assert stale == [], "DEFERRED lists imports that no longer exist"
    uncommented = [
        f"{m} -> {t} (line {line})" for m, t, deferred, line, comment in IMPORTS
        if deferred and not comment and (m, "*") not in DEFERRED
    ]
    assert uncommented == [], "a deferred import says why in a comment on its line or the line above"


def test_the_command_modules_say_why_they_defer():
    for module in {m for m, _ in DEFERRED if _ == "*"}:
        assert "--help" in MODULES[module].read_text(), f"{module}: say once why its imports are deferred"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_file_sizes(module):
    path = MODULES[module]
    lines = len(path.read_text().splitlines())
    assert lines <= 350, f"{path}: {lines} lines; split it at a concept boundary"
    rel = path.relative_to(PACKAGE).as_posix()
    if path.name != "__init__.py" and rel not in SHORT_ENTRY_POINTS:
        assert lines >= 60, f"{path}: {lines} lines; fold it into the module of its concept"


def test_the_layer_table_covers_every_package():
    for module in MODULES:
        _layer(module)
