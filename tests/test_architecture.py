"""The layout of docs/architecture.md, checked against the code.

* Every import between rooms (lazy ones inside functions included; ``if TYPE_CHECKING:`` ones not)
  is an arrow the document's table draws, every drawn arrow is used, and the rooms form no cycle.
* The promises the document makes, in fresh interpreters (pytest's own process has PIL loaded).
* The conventions of the product layer: exceptions in errors.py, at most 8 parameters per
  pipeline function, no print and no ``log=`` parameter in library code, ``dir(pulse_sr)``.
"""

import ast
import json
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "pulse_sr"
DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"

PROBE = """
import json, sys
import {module}
print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('pulse_sr', 'PIL', 'tqdm', 'click'))))
"""


def _modules():
    for f in sorted(SRC.rglob("*.py")):
        parts = f.relative_to(SRC.parent).with_suffix("").parts
        is_pkg = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_pkg else parts)
        yield f, name, name if is_pkg else name.rsplit(".", 1)[0]


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(tree: ast.AST, package: str):
    """Every pulse_sr module a file imports, at any depth, except under ``if TYPE_CHECKING:``."""
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for n in ast.walk(node)}
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield from ([target] if node.module else [f"{target}.{a.name}" for a in node.names])


def code_arrows():
    arrows = defaultdict(set)
    for f, name, package in _modules():
        for target in _imports(ast.parse(f.read_text()), package):
            if target.split(".")[0] == "pulse_sr" and _room(target) != _room(name):
                arrows[_room(name)].add(_room(target))
    return arrows


def drawn_arrows():
    """The table under "## The arrows": ``| room | a, b (why), c |``."""
    section = DOC.read_text().split("## The arrows", 1)[1].split("\n## ", 1)[0]
    arrows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 2 or cells[0] in ("room", "") or set(cells[0]) <= set("-"):
            continue
        targets = re.sub(r"\([^)]*\)", "", cells[1])
        arrows[cells[0].strip("`")] = {t.strip() for t in targets.split(",") if t.strip()}
    return arrows


def test_every_import_between_rooms_is_an_arrow_the_document_draws():
    drawn, code = drawn_arrows(), code_arrows()
    rooms = {_room(name) for _, name, _ in _modules()}
    assert set(drawn) == rooms, f"rooms in the table vs the code: {set(drawn) ^ rooms}"
    undrawn = {(a, b) for a, bs in code.items() for b in bs if b not in drawn[a]}
    assert not undrawn, f"imports the document does not draw: {sorted(undrawn)}"
    unused = {(a, b) for a, bs in drawn.items() for b in bs if b not in code.get(a, ())}
    assert not unused, f"arrows the code no longer needs (remove them from docs/architecture.md): {sorted(unused)}"


def test_the_rooms_form_no_cycle():
    arrows, state = code_arrows(), {}

    def visit(room, path):
        if state.get(room) == "done":
            return
        assert state.get(room) != "open", f"cycle: {' -> '.join(path + [room])}"
        state[room] = "open"
        for nxt in sorted(arrows.get(room, ())):
            visit(nxt, path + [room])
        state[room] = "done"

    for room in sorted(arrows):
        visit(room, [])


def test_no_module_imports_itself_back():
    """No cycle between modules of src/pulse_sr, lazy imports inside functions counted (TYPE_CHECKING ones not).

    An import names a module, or a name in a package; it counts as an edge to the longest module prefix.
    """
    modules = {name for _, name, _ in _modules()}

    def module_of(target):
        parts = target.split(".")
        return next((".".join(parts[:i]) for i in range(len(parts), 0, -1) if ".".join(parts[:i]) in modules), None)

    graph = {}
    for f, name, package in _modules():
        targets = {module_of(t) for t in _imports(ast.parse(f.read_text()), package) if t.startswith("pulse_sr")}
        graph[name] = sorted(t for t in targets if t and t != name)
    state, path = {}, []

    def visit(m):
        state[m] = "open"
        path.append(m)
        for nxt in graph.get(m, ()):
            assert state.get(nxt) != "open", f"import cycle: {' -> '.join(path[path.index(nxt):] + [nxt])}"
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_nothing_imports_the_commands_or_the_web_page():
    importers = {a for a, bs in code_arrows().items() if bs & {"cli", "web"}}
    assert importers <= {"__main__", "cli"}, importers


def _loaded_after_import(module):
    out = subprocess.run([sys.executable, "-c", PROBE.format(module=module)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return set(json.loads(out.stdout.splitlines()[-1]))


def test_search_core_is_pure():
    import pulse_sr
    assert pulse_sr.upsample.__module__ == "pulse_sr.search.loop"
    loaded = _loaded_after_import("pulse_sr.search.loop")
    # torch itself imports tqdm; what the core may not add is anything beyond torch's own.
    extra = {m for m in loaded if m.split(".")[0] in ("PIL", "tqdm", "click")} - _loaded_after_import("torch")
    assert not extra, extra
    rooms = {m.split(".")[1] for m in loaded if m.startswith("pulse_sr.")}
    assert not rooms & {"cli", "pipelines", "hub", "formats", "runtime", "images", "model", "align", "networks"}, rooms


@pytest.mark.parametrize("module, forbidden", [
    ("pulse_sr.networks.stylegan1", {"formats", "hub", "pipelines", "cli", "model", "search"}),
    ("pulse_sr.formats.tf_pickle", {"hub", "pipelines", "cli", "search"}),
    ("pulse_sr.hub.registry", {"networks", "pipelines", "cli", "search", "ops"}),
    ("pulse_sr.pipelines.upsample", {"cli", "web"}),
    ("pulse_sr.web.app", {"cli"}),
    ("pulse_sr.ops.operators", {"images", "pipelines", "cli", "search", "model"}),
])
def test_arrows_point_one_way(module, forbidden):
    loaded = _loaded_after_import(module)
    rooms = {m.split(".")[1] for m in loaded if m.startswith("pulse_sr.")}
    assert not rooms & forbidden, rooms & forbidden


def test_registry_needs_no_torch():
    out = subprocess.run([sys.executable, "-c", "import sys, pulse_sr.hub.registry; print('torch' in sys.modules)"],
                         capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr


# ---------------------------------------------------------------------------
# Conventions


def _trees():
    for f, name, _ in _modules():
        yield f, name, ast.parse(f.read_text())


def _is_exception_class(node: ast.ClassDef) -> bool:
    return any(re.search(r"(Error|Exception|Unavailable|Cancelled|Interrupt)$", ast.unparse(b)) for b in node.bases)


def test_every_exception_class_lives_in_errors_and_is_a_pulse_error():
    import pulse_sr.errors as errors

    elsewhere = [f"{name}.{n.name}" for _, name, tree in _trees() if name != "pulse_sr.errors"
                 for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and _is_exception_class(n)]
    assert not elsewhere, elsewhere
    classes = [v for v in vars(errors).values() if isinstance(v, type) and issubclass(v, BaseException)]
    assert len(classes) >= 15
    for cls in classes:
        assert issubclass(cls, errors.PulseError), cls
        assert cls.exit_code in (errors.EXIT_ERROR, errors.EXIT_BAD_INPUT), cls


def test_no_pipeline_function_takes_more_than_8_parameters():
    too_many = []
    for f, name, tree in _trees():
        if ".pipelines" not in name:
            continue
        for n in ast.walk(tree):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = n.args
                count = len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs) + bool(a.vararg) + bool(a.kwarg)
                if count > 8:
                    too_many.append(f"{name}.{n.name}: {count}")
    assert not too_many, too_many


def test_library_code_logs_and_never_prints():
    offenders = []
    for f, name, tree in _trees():
        if _room(name) in ("cli", "__main__"):
            continue
        for n in ast.walk(tree):
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "print":
                offenders.append(f"{name}:{n.lineno} print()")
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for arg in n.args.args + n.args.kwonlyargs:
                    if arg.arg == "log":
                        offenders.append(f"{name}.{n.name}: a log= parameter")
    assert not offenders, offenders


def test_dir_lists_the_public_api():
    import pulse_sr

    listed = [n for n in dir(pulse_sr) if not n.startswith("_")]
    assert {"upsample", "load_model", "PulseModel", "PulseResult", "upsample_files", "parse_operator"} <= set(listed)
    assert set(listed) == set(pulse_sr.__all__)
    for name in pulse_sr.__all__:
        assert getattr(pulse_sr, name) is not None, name
