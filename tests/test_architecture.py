"""The rooms of `endcloud` import each other in one direction only.

A *room* is the first name under the package: `endcloud.serve.app` lives in `serve`, the
top-level module `endcloud/config.py` is the room `config`, and `endcloud/__init__.py` /
`endcloud/__main__.py` are the root. The checker reads every `.py` file with `ast` (it never
imports one) and collects every import, module level or not: the circle this guards against
was hidden inside functions, where an import runs late enough not to crash but still ties two
rooms together. Relative imports are resolved, and `from endcloud import cloud` counts as an
import of the room `cloud`.

Each failure names the module-level edges (`file:line imports module`) that break a rule, so
the fix is obvious: move or invert exactly those imports.

    .venv/bin/python -m pytest -q -p no:cacheprovider tests/test_architecture.py
"""

from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "endcloud"

ANY = "*"


@dataclass(frozen=True)
class Forbidden:
    """Modules in room `source` (or any room, for `ANY`) must not import room `target`."""

    name: str
    source: str
    target: str
    reason: str
    exempt: tuple[str, ...] = ()
    """Modules, relative to the package (`"__main__"`), that may import `target` anyway."""


@dataclass(frozen=True)
class Rules:
    """What `check` enforces; a parameter so the planted-package tests run the real rules."""

    forbidden: tuple[Forbidden, ...]
    no_circles: bool = True
    """No strongly connected component of the room graph may hold more than one room."""
    root_names_ignored: frozenset[str] = frozenset({"__version__"})
    """`from pkg import X` for these X is not an edge to the root: it is metadata, not code."""


RULES = Rules(
    forbidden=(
        Forbidden("evolve-not-serve", "evolve", "serve", "the online loop knows nothing of HTTP"),
        Forbidden(
            "end-not-runtime", "end", "runtime", "making and versioning models does not depend on running them"
        ),
        Forbidden("end-not-serve", "end", "serve", "making and versioning models does not depend on running them"),
        Forbidden("runtime-not-serve", "runtime", "serve", "running the model knows nothing of HTTP"),
        Forbidden("runtime-not-evolve", "runtime", "evolve", "running the model knows nothing of the online loop"),
        Forbidden(
            "library-not-testing",
            ANY,
            "testing",
            "test doubles ship for tests, benches and users; the library itself never serves one",
        ),
        Forbidden(
            "nothing-imports-cli",
            ANY,
            "cli",
            "the CLI is the outermost layer; library code must be callable without it",
            exempt=("__main__",),
        ),
    ),
)


@dataclass(frozen=True)
class Edge:
    """One import statement's target: `path:line` in module `importer` imports `target`."""

    path: str
    line: int
    importer: str
    target: str
    name: str | None = None
    """For `from pkg import name` where `name` is not a submodule: the name, else None."""

    def __str__(self) -> str:
        return f"{self.path}:{self.line} imports {self.target}"


def _module_name(file: Path, package_dir: Path) -> str:
    parts = list(file.relative_to(package_dir.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _collect(package_dir: Path) -> list[Edge]:
    """Every import of the package by the package itself, from every file and every scope."""
    package = package_dir.name
    files = sorted(package_dir.rglob("*.py"))
    modules = {_module_name(f, package_dir) for f in files}
    edges: list[Edge] = []
    for file in files:
        importer = _module_name(file, package_dir)
        is_package = file.name == "__init__.py"
        # A package's own `__init__` is the base for its relative imports; a module's is its parent.
        here = importer.split(".") if is_package else importer.split(".")[:-1]
        rel_path = file.relative_to(package_dir.parent).as_posix()
        tree = ast.parse(file.read_text(encoding="utf-8"), filename=str(file))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    edges.append(Edge(rel_path, node.lineno, importer, alias.name))
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here[: len(here) - (node.level - 1)]
                    if node.module:
                        base = base + node.module.split(".")
                    source = ".".join(base)
                else:
                    source = node.module or ""
                for alias in node.names:
                    sub = f"{source}.{alias.name}"
                    if sub in modules:
                        edges.append(Edge(rel_path, node.lineno, importer, sub))
                    else:
                        edges.append(Edge(rel_path, node.lineno, importer, source, name=alias.name))
    return [e for e in edges if e.target == package or e.target.startswith(package + ".")]


def _room(module: str) -> str:
    """The first name under the package; the package itself and its `__main__` are the root."""
    parts = module.split(".")
    if len(parts) == 1 or (len(parts) == 2 and parts[1] == "__main__"):
        return parts[0]
    return parts[1]


def _components(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components with more than one room (the graph is a few dozen rooms)."""

    def reach(start: str) -> set[str]:
        seen, todo = {start}, [start]
        while todo:
            for nxt in graph.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    rooms = set(graph) | {t for ts in graph.values() for t in ts}
    reachable = {r: reach(r) for r in rooms}
    out: list[set[str]] = []
    for room in sorted(rooms):
        if any(room in c for c in out):
            continue
        component = {other for other in reachable[room] if room in reachable[other]}
        if len(component) > 1:
            out.append(component)
    return out


def check(package_dir: Path, rules: Rules = RULES) -> list[str]:
    """Every broken rule in the package at `package_dir`, one string per violation."""
    package = package_dir.name
    edges = [
        e
        for e in _collect(package_dir)
        if not (e.target == package and e.name in rules.root_names_ignored)
        and _room(e.importer) != _room(e.target)
    ]
    violations: list[str] = []
    for rule in rules.forbidden:
        exempt = {f"{package}.{m}" for m in rule.exempt}
        bad = [
            e
            for e in edges
            if _room(e.target) == rule.target
            and (rule.source == ANY or _room(e.importer) == rule.source)
            and e.importer not in exempt
        ]
        if bad:
            # `from m import A, B` is one edge per name but one line to change: show it once.
            lines = "\n".join(f"    {line}" for line in dict.fromkeys(str(e) for e in bad))
            violations.append(f"{rule.name} ({rule.reason}):\n{lines}")
    if rules.no_circles:
        graph: dict[str, set[str]] = defaultdict(set)
        for e in edges:
            graph[_room(e.importer)].add(_room(e.target))
        for component in _components(graph):
            by_pair: dict[tuple[str, str], list[Edge]] = defaultdict(list)
            for e in edges:
                if _room(e.importer) in component and _room(e.target) in component:
                    by_pair[_room(e.importer), _room(e.target)].append(e)
            lines = []
            for (src, dst), pair_edges in sorted(by_pair.items()):
                lines.append(f"    {src} -> {dst}:")
                lines.extend(f"      {line}" for line in dict.fromkeys(str(e) for e in pair_edges))
            rooms = ", ".join(sorted(component))
            violations.append(
                f"room circle {{{rooms}}} (rooms must form a layered graph; cut one direction):\n" + "\n".join(lines)
            )
    return violations


def test_endcloud_has_no_forbidden_import():
    violations = check(PACKAGE_DIR)
    assert not violations, "\n\n".join(violations)


# --- the checker itself, on planted packages ---------------------------------------------


def _plant(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    for directory in {(root / rel).parent for rel in files}:
        while directory != root:
            (directory / "__init__.py").touch()
            directory = directory.parent
    return root / "pkg"


def test_a_circle_hidden_in_a_function_is_caught(tmp_path):
    pkg = _plant(
        tmp_path,
        {
            "pkg/a/x.py": "def f():\n    import pkg.b.y\n",
            "pkg/b/y.py": "import pkg.a\n",
        },
    )
    (violation,) = check(pkg)
    assert "room circle {a, b}" in violation
    assert "pkg/a/x.py:2 imports pkg.b.y" in violation
    assert "pkg/b/y.py:1 imports pkg.a" in violation


def test_a_forbidden_direction_inside_a_function_is_caught(tmp_path):
    pkg = _plant(
        tmp_path,
        {
            "pkg/evolve/service.py": "class S:\n    def run(self):\n        from pkg.serve.workspace import W\n",
            "pkg/serve/workspace.py": "W = 1\n",
        },
    )
    (violation,) = check(pkg)
    assert violation.startswith("evolve-not-serve")
    assert "pkg/evolve/service.py:3 imports pkg.serve.workspace" in violation


def test_only_main_may_import_cli_and_version_is_not_an_edge(tmp_path):
    pkg = _plant(
        tmp_path,
        {
            "pkg/__init__.py": "__version__ = '0'\n",
            "pkg/__main__.py": "from pkg.cli import main\n",
            "pkg/cli/__init__.py": "from pkg import __version__\nmain = None\n",
            "pkg/config.py": "from pkg import cli\n",
        },
    )
    (violation,) = check(pkg)
    assert violation.startswith("nothing-imports-cli")
    assert "pkg/config.py:1 imports pkg.cli" in violation
    assert "__main__" not in violation


def test_relative_imports_are_resolved(tmp_path):
    pkg = _plant(
        tmp_path,
        {
            "pkg/a/x.py": "from ..b import y\n",
            "pkg/b/__init__.py": "from .y import Y\n",
            "pkg/b/y.py": "from pkg.a import x\nY = 1\n",
        },
    )
    (violation,) = check(pkg)
    assert "room circle {a, b}" in violation
    assert "pkg/a/x.py:1 imports pkg.b.y" in violation
    assert "pkg/b/y.py:1 imports pkg.a.x" in violation
    # `from .y import Y` stays inside room b, so it is no edge at all.
    assert "pkg/b/__init__.py" not in violation


@pytest.mark.parametrize("clean", [True, False])
def test_a_layered_package_passes(tmp_path, clean):
    files = {"pkg/serve/app.py": "from pkg.evolve import loop\n", "pkg/evolve/loop.py": "X = 1\n"}
    if not clean:
        files["pkg/evolve/loop.py"] = "if False:\n    from pkg.serve import app\n"
    violations = check(_plant(tmp_path, files))
    assert bool(violations) is not clean
