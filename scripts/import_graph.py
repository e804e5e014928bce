#!/usr/bin/env python3
"""Print qtune's import graph between its own modules and fail on a cycle.

    .venv/bin/python scripts/import_graph.py            # cycles (exit 1) or "no cycle"
    .venv/bin/python scripts/import_graph.py --dot      # the graph in Graphviz dot

Every ``import`` statement counts, those inside functions too (a lazy import that closes
a loop is still a loop in the design). Modules are found through the installed package
(``pkgutil.walk_packages``), so serve/, ui/ and the other top-level folders are read as
the ``qtune.*`` subpackages they are installed as.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import pkgutil
import sys
from pathlib import Path


def modules() -> dict[str, Path]:
    """Module name -> source file, for qtune and every subpackage."""
    root = importlib.import_module("qtune")
    found = {"qtune": Path(root.__file__)}
    for info in pkgutil.walk_packages(root.__path__, "qtune."):
        spec = importlib.util.find_spec(info.name)
        if spec is not None and spec.origin and spec.origin.endswith(".py"):
            found[info.name] = Path(spec.origin)
    # Subpackages mapped from other folders (package-dir) are not under qtune/__path__.
    for package in ("serve", "finetune", "ui", "data", "eval", "feedback", "study"):
        name = f"qtune.{package}"
        module = importlib.import_module(name)
        found[name] = Path(module.__file__)
        for info in pkgutil.walk_packages(module.__path__, name + "."):
            spec = importlib.util.find_spec(info.name)
            if spec is not None and spec.origin and spec.origin.endswith(".py"):
                found[info.name] = Path(spec.origin)
    return found


def imported_names(name: str, path: Path, known: set[str]) -> set[str]:
    """The qtune modules that ``name`` imports (a ``from M import x`` names M.x when that
    is a module, else M)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            for alias in node.names:
                full = f"{base}.{alias.name}"
                targets.add(full if full in known else base)
    return {t for t in targets if t in known and t != name}


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imported_names(name, path, known) for name, path in sorted(found.items())}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    result: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                result.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for node in sorted(edges):
        if node not in index:
            visit(node)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dot", action="store_true", help="print the graph in dot format")
    args = parser.parse_args(argv)
    edges = graph()
    if args.dot:
        print("digraph qtune {")
        for source, targets in edges.items():
            for target in sorted(targets):
                print(f'  "{source}" -> "{target}";')
        print("}")
    found = cycles(edges)
    for component in found:
        print("import cycle: " + " <-> ".join(component), file=sys.stderr)
    if not found and not args.dot:
        print(f"no import cycle among {len(edges)} qtune modules "
              f"({sum(map(len, edges.values()))} imports)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
