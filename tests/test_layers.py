"""Imports run one way: envs → estimators → bench → reports → pgvar (the command), with no circle.

Every module of the five packages is parsed with `ast` (no import runs), and every `import` and
`from … import` statement is read, deferred ones inside functions included. Each names a project
module: `import a.b` names a.b; `from a import b` names a.b where a/b.py exists (a submodule), else
the package a itself (its __init__); `from a.b import c` names a.b. A package's __init__ is a module
like any other: a submodule importing its own package closes a circle with the __init__'s
registration imports, so it is one.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("envs", "estimators", "bench", "reports", "pgvar")  # lowest first; a module may import its layer or lower


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(path): path for layer in LAYERS for path in sorted((ROOT / layer).rglob("*.py"))}


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules `path` (module `name`) imports, anywhere in its body."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    named: set[str] = set()

    def deepest(dotted: str) -> str | None:
        while dotted and dotted not in modules:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, `level - 1` steps up
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        named.update(t for t in map(deepest, targets) if t is not None)
    named.discard(name)
    return named


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def layer(module: str) -> int:
    return LAYERS.index(module.split(".")[0])


def test_the_scan_sees_every_package_and_its_deferred_imports():
    graph = import_graph()
    assert {m.split(".")[0] for m in graph} == set(LAYERS)
    assert "estimators.score" in graph["estimators"]  # registration: the package imports its estimators
    assert "reports.report" in graph["pgvar.cli"]  # deferred, inside the `report` subcommand


def test_no_import_from_a_lower_layer_into_a_higher_one():
    upward = sorted(f"{module} → {target}" for module, targets in import_graph().items()
                    for target in targets if layer(target) > layer(module))
    assert not upward, "imports against the layer order envs < estimators < bench < reports < pgvar:\n" + "\n".join(upward)


def test_no_import_circle():
    graph = import_graph()
    cycles, state = [], {}  # state: 1 on the current path, 2 done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycles.append(" → ".join([*path[path.index(target):], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import circles:\n" + "\n".join(cycles)


def test_no_module_imports_its_registering_package():
    """envs/__init__ and estimators/__init__ import every problem and estimator module to register them; a
    `from estimators import mlp_backprop` inside estimators/ reads as importing that package. Submodules of a
    registering package name each other by their full module path (`import estimators.mlp_backprop`)."""
    graph = import_graph()
    registering = {p for p in LAYERS if any(t.startswith(f"{p}.") for t in graph[p])}
    assert {"envs", "estimators"} <= registering
    offenders = []
    for name, path in project_modules().items():
        package = name.split(".")[0]
        if path.name == "__init__.py" or package not in registering:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == package:
                offenders.append(f"{name}:{node.lineno} from {package} import "
                                 + ", ".join(alias.name for alias in node.names))
    assert not offenders, "\n".join(offenders)
