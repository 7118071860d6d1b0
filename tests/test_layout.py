"""The house's shape: no import circle anywhere in workspaces/ (the layers are import-linter's, in `make lint`)."""

from __future__ import annotations

import grimp


def import_circles(package: str) -> list[list[str]]:
    """Every group of modules that import each other round in a circle (Tarjan's strongly connected components)."""
    graph = grimp.build_graph(package, include_external_packages=False)
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(module: str) -> None:
        order[module] = low[module] = len(order)
        stack.append(module)
        on_stack.add(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in order:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], order[imported])
        if low[module] == order[module]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                circles.append(sorted(group))

    for module in sorted(graph.modules):
        if module not in order:
            visit(module)
    return circles


def test_no_module_of_the_app_takes_part_in_an_import_circle():
    assert import_circles("workspaces") == []


def test_the_check_finds_a_circle(tmp_path, monkeypatch):
    """The check itself can fail: two modules that import each other are one circle."""
    package = tmp_path / "circled"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from . import b\n")
    (package / "b.py").write_text("from . import a\n")
    (package / "c.py").write_text("from . import a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert import_circles("circled") == [["circled.a", "circled.b"]]
