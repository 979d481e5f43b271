"""The import arrows of the whole project, read from the source (ast), not from a running interpreter.

:data:`LAYERS` is the project's layer table, bottom to top. A module imports its own layer and the
layers below it, never one above; no import circle exists anywhere (runtime, trainer, exporter,
CLI). Every ``import`` counts, also those inside functions and under ``TYPE_CHECKING``: a lazy
import that runs back up is still a cycle a newcomer has to untangle. A function-level import of
one of the project's own modules is allowed only for an optional dependency, with a comment that
says so on its line or the line above.

    ringfold CLI, demo ──► exporter ──► trainer ──► ringfold.runtime (its public API)
        ──► runtime.vocab ──► deploy ──► parity ──► infer ──► backends ──► graph ──► bundle ──► pixels ──► base
        ──► ringfold base (errors, atomic, ownership, values, extras)
    runtime: numpy, Pillow, ONNX Runtime   (no torch, so it runs on a device without it)
"""

from __future__ import annotations

import ast
import io
import tokenize
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: folder → package, as pyproject's [tool.setuptools] package-dir maps them
PACKAGES = {
    "ringfold": "ringfold",
    "trainer": "ringfold.trainer",
    "exporter": "ringfold.exporter",
    "runtime": "ringfold.runtime",
}
CLI_IMPORTERS = {"ringfold.__main__"}  # and the console script (pyproject [project.scripts])

#: the layer table, bottom to top: (layer, the modules it holds: a name and everything under it)
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "ringfold base",
        ("ringfold.errors", "ringfold.atomic", "ringfold.ownership", "ringfold.values", "ringfold.extras"),
    ),
    ("runtime.base", ("ringfold.runtime.base",)),
    ("runtime.pixels", ("ringfold.runtime.pixels",)),
    ("runtime.bundle", ("ringfold.runtime.bundle",)),
    ("runtime.graph", ("ringfold.runtime.graph",)),
    ("runtime.backends", ("ringfold.runtime.backends",)),
    ("runtime.infer", ("ringfold.runtime.infer",)),
    ("runtime.parity", ("ringfold.runtime.parity",)),
    ("runtime.deploy", ("ringfold.runtime.deploy",)),
    ("runtime.vocab", ("ringfold.runtime.vocab",)),
    ("runtime API", ()),  # ringfold/runtime/__init__.py: the supported Python API
    ("trainer", ("ringfold.trainer",)),
    ("exporter", ("ringfold.exporter",)),
    (
        "CLI and demo",
        ("ringfold.cli", "ringfold.cli_types", "ringfold.commands", "ringfold.demo", "ringfold.demo_data"),
    ),
)
#: package __init__ modules that are a layer of their own, not the head of everything under them
EXACT = {"ringfold": "ringfold base", "ringfold.runtime": "runtime API", "ringfold.__main__": "CLI and demo"}
RANK = {name: i for i, (name, _) in enumerate(LAYERS)}

#: known arrows another change in flight removes (file -> why); each entry must still be needed
PENDING_UPWARD: dict[str, str] = {}
#: files whose function-level imports of the project's own modules do not yet say why (owner: a helper at work)
PENDING_LAZY: dict[str, str] = {}


# ------------------------------------------------------------------------------------------ reading
def _module_name(path: Path) -> tuple[str, bool]:
    """The dotted name of a package's source file, and whether it is the package's __init__."""
    rel = path.relative_to(ROOT)
    dotted = ".".join([PACKAGES[rel.parts[0]], *rel.parts[1:-1]])
    if rel.stem == "__init__":
        return dotted, True
    return f"{dotted}.{rel.stem}", False


def _sources(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


@cache
def _project_modules() -> dict[str, Path]:
    return {_module_name(p)[0]: p for p in _sources(*PACKAGES)}


def _absolute(node: ast.ImportFrom, path: Path) -> str:
    """The module an ``ImportFrom`` names, relative imports resolved against ``path``'s package."""
    module = node.module or ""
    if not node.level:
        return module
    name, is_package = _module_name(path)
    package = name if is_package else name.rpartition(".")[0]
    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
    return ".".join(base + ([module] if module else []))


def _import_nodes(path: Path) -> list[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement of ``path``, and whether it sits inside a function."""
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.append((child, in_function))
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(ast.parse(path.read_text(), str(path)), False)
    return found


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, relative imports resolved; ``from a import b`` counts a and a.b."""
    found: set[str] = set()
    in_package = path.relative_to(ROOT).parts[0] in PACKAGES  # examples/ and benchmarks/ are scripts
    for node, _ in _import_nodes(path):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        else:
            module = _absolute(node, path) if in_package else node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def _targets(node: ast.Import | ast.ImportFrom, path: Path) -> set[str]:
    """The project modules one import statement loads (``from a import b``: a.b when it is a module, else a)."""
    modules = _project_modules()
    names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
    if isinstance(node, ast.ImportFrom):
        module = _absolute(node, path)
        names = [f"{module}.{a.name}" if f"{module}.{a.name}" in modules else module for a in node.names]
    out = set()
    for name in names:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        if name:
            out.add(name)
    return out


@cache
def _graph() -> dict[str, set[str]]:
    """module -> the project modules it imports (and their packages' __init__ it runs on the way)."""
    graph: dict[str, set[str]] = {}
    for name, path in _project_modules().items():
        edges: set[str] = set()
        own_parents = {name.rsplit(".", i)[0] for i in range(1, name.count(".") + 1)}
        for node, _ in _import_nodes(path):
            for target in _targets(node, path):
                edges.add(target)
                parts = target.split(".")
                # importing a.b.c runs a/__init__ and a/b/__init__ too, unless they are already ours
                edges.update(p for i in range(1, len(parts)) if (p := ".".join(parts[:i])) not in own_parents)
        graph[name] = {e for e in edges if e in _project_modules() and e != name}
    return graph


def layer_of(module: str) -> str:
    """The layer of a project module: the longest name of :data:`LAYERS` it is, or lies under."""
    if module in EXACT:
        return EXACT[module]
    best, length = None, -1
    for layer, names in LAYERS:
        for prefix in names:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > length:
                best, length = layer, len(prefix)
    if best is None:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS in tests/test_import_arrows.py")
    return best


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def _commented_lines(path: Path) -> set[int]:
    lines = set()
    for tok in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
        if tok.type == tokenize.COMMENT:
            lines.add(tok.start[0])
    return lines


def _file(module: str) -> str:
    return str(_project_modules()[module].relative_to(ROOT))


# -------------------------------------------------------------------------------------------- tests
def test_module_names_follow_package_dir():
    assert _module_name(ROOT / "trainer" / "adapters" / "arc.py") == ("ringfold.trainer.adapters.arc", False)
    assert _module_name(ROOT / "runtime" / "__init__.py") == ("ringfold.runtime", True)
    assert _module_name(ROOT / "ringfold" / "cli" / "__init__.py") == ("ringfold.cli", True)


def test_relative_imports_resolve_inside_their_package():
    imports = _imports(ROOT / "trainer" / "train.py")
    assert not any(m.startswith(".") for m in imports)
    assert "ringfold.trainer.run" in imports  # `from .run import ...` or `from ringfold.trainer.run import ...`


def test_every_module_has_a_layer_and_the_table_is_in_import_order():
    for module in _project_modules():
        layer_of(module)
    runtime = [name for name, _ in LAYERS if name.startswith("runtime.")]
    assert runtime == [
        "runtime." + p for p in ("base", "pixels", "bundle", "graph", "backends", "infer", "parity", "deploy", "vocab")
    ]
    assert layer_of("ringfold.runtime.bundle.sections.raw_input") == "runtime.bundle"
    assert layer_of("ringfold.cli_types") == "CLI and demo" and layer_of("ringfold.runtime") == "runtime API"


def test_no_module_imports_a_layer_above_its_own():
    upward = {}
    for module, path in _project_modules().items():
        mine = RANK[layer_of(module)]
        above = set()
        for node, _ in _import_nodes(path):
            above |= {t for t in _targets(node, path) if RANK[layer_of(t)] > mine}
        if above:
            upward[_file(module)] = sorted(f"{t} ({layer_of(t)})" for t in above)
    pending = {f: v for f, v in upward.items() if f in PENDING_UPWARD}
    assert {f: v for f, v in upward.items() if f not in PENDING_UPWARD} == {}
    assert set(pending) == set(PENDING_UPWARD), "a PENDING_UPWARD entry is no longer needed: remove it"


def test_no_import_circle_anywhere():
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_a_circle():
    """The test above can fail: a made-up graph with the old bundle → … → bundle circle is one."""
    graph = {"bundle": {"deepstream"}, "deepstream": {"raw_input"}, "raw_input": {"bundle"}, "images": set()}
    assert _cycles(graph) == [["bundle", "deepstream", "raw_input"]]


def test_function_level_imports_of_our_own_modules_say_why():
    """Allowed only for an optional dependency (torch, onnx, TensorRT, matplotlib behind the module), with a
    comment on the import's line or the line above; anything else is imported at the top of the module."""
    silent = {}
    for module, path in _project_modules().items():
        comments = _commented_lines(path)
        lines = [
            node.lineno
            for node, in_function in _import_nodes(path)
            if in_function and _targets(node, path) and not {node.lineno, node.lineno - 1} & comments
        ]
        if lines:
            silent[_file(module)] = lines
    pending = {f: v for f, v in silent.items() if f in PENDING_LAZY}
    assert {f: v for f, v in silent.items() if f not in PENDING_LAZY} == {}
    assert set(pending) == set(PENDING_LAZY), "a PENDING_LAZY entry is no longer needed: remove it"


# ------------------------------------------------------------------------------- what may import what
def _hits(imports: set[str], *forbidden: str) -> list[str]:
    return sorted(m for m in imports if any(m == f or m.startswith(f + ".") for f in forbidden))


def _violations(folders: tuple[str, ...], forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    found = {}
    for path in _sources(*folders):
        hits = _hits(_imports(path), *forbidden)
        if hits:
            found[str(path.relative_to(ROOT))] = hits
    return found


def test_trainer_never_imports_the_exporter_or_the_cli():
    assert _violations(("trainer",), ("ringfold.exporter", "ringfold.cli")) == {}


@pytest.mark.parametrize("forbidden", ["ringfold.trainer", "ringfold.exporter", "ringfold.cli", "torch"])
def test_runtime_imports_neither_trainer_exporter_cli_nor_torch(forbidden):
    extra = ("torchvision", "open_clip") if forbidden == "torch" else ()
    assert _violations(("runtime",), (forbidden, *extra)) == {}


def test_only_the_cli_imports_argparse():
    """Library code takes typed values; parsing a command line is the CLI's job."""
    found = {
        _file(m): ["argparse"]
        for m, p in _project_modules().items()
        if "argparse" in _imports(p) and layer_of(m) != "CLI and demo"
    }
    assert found == {}


def test_no_library_module_imports_the_demo():
    library = {m: p for m, p in _project_modules().items() if layer_of(m) != "CLI and demo"}
    assert {_file(m): hits for m, p in library.items() if (hits := _hits(_imports(p), "ringfold.demo_data"))} == {}


def test_exporter_never_imports_the_cli():
    assert _violations(("exporter",), ("ringfold.cli",)) == {}


def test_nothing_but_the_entry_point_imports_the_cli():
    found = {}
    for path in _sources("ringfold", "trainer", "exporter", "runtime", "examples", "benchmarks"):
        rel = path.relative_to(ROOT)
        name = _module_name(path)[0] if rel.parts[0] in PACKAGES else str(rel)
        hits = _hits(_imports(path), "ringfold.cli")
        in_cli = name == "ringfold.cli" or name.startswith("ringfold.cli.")
        # examples/ are scripts on top, like the CLI: examples/b2n builds its config from `ringfold train` flags
        if hits and name not in CLI_IMPORTERS and not in_cli and rel.parts[0] != "examples":
            found[name] = hits
    assert found == {}


# --------------------------------------------------------------------------------- relative imports
#: files whose owner has not made their own-package imports relative yet (another change in flight)
_NOT_YET_RELATIVE: set[str] = set()


def _own_package(name: str) -> str:
    """ringfold.trainer for anything under trainer/, likewise exporter; one runtime layer (ringfold.runtime.bundle)
    for anything in it; ringfold for ringfold/."""
    parts = name.split(".")
    if name.startswith("ringfold.runtime.") and len(parts) > 2:
        return ".".join(parts[:3])
    for package in ("ringfold.trainer", "ringfold.exporter", "ringfold.runtime"):
        if name == package or name.startswith(package + "."):
            return package
    return "ringfold"


def test_imports_within_a_package_are_relative():
    """``from .run import RunRecord`` inside trainer/, ``from .spec import FIX`` inside one runtime layer;
    ``from ringfold.runtime.bundle.loader import ...`` across packages and layers."""
    found = {}
    for path in _sources("ringfold", "trainer", "exporter", "runtime"):
        rel = str(path.relative_to(ROOT))
        if rel in _NOT_YET_RELATIVE:
            continue
        own = _own_package(_module_name(path)[0])
        absolute = []
        for node in ast.walk(ast.parse(path.read_text(), rel)):
            if isinstance(node, ast.ImportFrom) and not node.level and node.module:
                modules = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
                if any(_own_package(m) == own and m.startswith("ringfold.") for m in modules if m != "ringfold"):
                    absolute.append(node.module)
                elif node.module == "ringfold" and own == "ringfold":
                    absolute.append(node.module)
        if absolute:
            found[rel] = absolute
    assert found == {}
