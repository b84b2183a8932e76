"""The package's shape, checked: no import cycle, modules and functions of a readable size, a
docstring at the top of every module. The layers themselves are import-linter's contracts in
``pyproject.toml`` (``make test`` runs ``lint-imports``)."""

from __future__ import annotations

import ast
from pathlib import Path

import grimp
import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "mailer"
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80  # lines of code: blank lines, comments and the docstring not counted


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "migrations" not in p.parts)


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append(
                        (child, iter(sorted(graph.find_modules_directly_imported_by(child))))
                    )
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _function_lengths(path: Path) -> list[tuple[str, int, int]]:
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    long: list[tuple[str, int, int]] = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        body = lines[node.lineno - 1 : node.end_lineno]
        code = [line for line in body if line.strip() and not line.strip().startswith("#")]
        docstring = ast.get_docstring(node, clean=False)
        count = len(code) - (len(docstring.splitlines()) if docstring else 0)
        if count > MAX_FUNCTION_LINES:
            long.append((node.name, node.lineno, count))
    return long


def test_no_import_cycle_not_even_through_typing_only_imports() -> None:
    """A cycle is a cycle whether the import runs at import time or only for the type checker."""
    graph = grimp.build_graph("mailer", exclude_type_checking_imports=False)
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    """The check above can fail: two modules importing each other are reported."""
    graph = grimp.ImportGraph()
    for name in ("pkg", "pkg.a", "pkg.b", "pkg.c"):
        graph.add_module(name)
    graph.add_import(importer="pkg.a", imported="pkg.b")
    graph.add_import(importer="pkg.b", imported="pkg.a")
    graph.add_import(importer="pkg.c", imported="pkg.a")
    assert _cycles(graph) == [["pkg.a", "pkg.b"]]


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_is_readable_in_one_sitting(path: Path) -> None:
    """Each module opens with a docstring saying what it owns, stays under 500 lines and holds
    no function over 80 lines of code (migrations aside)."""
    source = path.read_text(encoding="utf-8")
    lines = len(source.splitlines())
    assert lines <= MAX_MODULE_LINES, f"{path.name}: {lines} lines"
    assert _function_lengths(path) == []
    if path.name != "__main__.py" or source.strip():
        assert ast.get_docstring(ast.parse(source)), f"{path} opens without a docstring"
