"""The library's layout: one direction of dependency, no cycles, small modules, typed API.

Every ``.py`` under ``tensorframes/`` is parsed with :mod:`ast`; every ``import`` statement
counts, including those inside functions and classes, so a function-level import cannot hide a
cycle or a wrong-way dependency. ``from pkg import name`` counts as importing the submodule
``pkg.name`` where one exists and ``pkg`` (its ``__init__``) otherwise; parent packages that
Python imports on the way are not counted (a submodule that imports a sibling directly does not
depend on its package's ``__init__``).

The layers (a module may import only from its own layer or lower ones):

==================================  =====
``_math``, ``_compat``, ``_checks``   0
``graph``                             1
``reps``                              2
``frames``                            3
``o3``                                4
``nn``                                5
``data``                              6
``testing``, ``bench``                7
==================================  =====

The top-level ``tensorframes/__init__.py`` gathers every layer; it may import anything, and no
library module may import it. Further: every import of a package module resolves to a file, no
library module outside ``testing``/``bench`` imports ``tensorframes.testing``, a module over 500
lines says why in its docstring (second paragraph ``Long module: <reason>``), and every public
function of the public API (the ``__all__`` of the packages in ``PUBLIC_PACKAGES``), and every
public method, ``__init__`` and ``__new__`` of its public classes, is fully annotated (return
too, except for ``__init__``). The checker is itself tested on a synthetic package.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

PACKAGE = "tensorframes"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

LAYERS = {
    "_math": 0,
    "_compat": 0,
    "_checks": 0,
    "graph": 1,
    "reps": 2,
    "frames": 3,
    "o3": 4,
    "nn": 5,
    "data": 6,
    "testing": 7,
    "bench": 7,
}
#: Packages whose ``__all__`` is the public API checked for annotations.
PUBLIC_PACKAGES = [
    "tensorframes",
    "tensorframes.reps",
    "tensorframes.frames",
    "tensorframes.o3",
    "tensorframes.nn",
    "tensorframes.data",
    "tensorframes.graph",
    "tensorframes.testing",
]
MAX_LINES = 500
LONG_MARK = "Long module:"

Edge = tuple[str, str]


# -- the checker ---------------------------------------------------------------------------------
def collect_modules(pkg_dir: Path, package: str = PACKAGE) -> dict[str, Path]:
    """``{dotted module name: path}`` for every ``.py`` file below ``pkg_dir``."""
    out = {}
    for path in sorted(pkg_dir.rglob("*.py")):
        parts = [package, *path.relative_to(pkg_dir).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imported(node: ast.AST, name: str, is_pkg: bool, modules: dict[str, Path]
              ) -> list[str]:
    """The modules of ``package`` that one import node imports, ``[]`` for foreign ones.

    A name of the package that is not a module (a typo, a moved file) is returned as it is, so
    that :func:`unresolved_imports` can report it.
    """
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    assert isinstance(node, ast.ImportFrom)
    if node.level:
        base = name.split(".") if is_pkg else name.split(".")[:-1]
        if node.level > 1:
            base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    out = []
    names_module = False
    for alias in node.names:
        sub = f"{target}.{alias.name}"
        if sub in modules:
            out.append(sub)
        else:
            names_module = True
    if names_module:
        out.append(target)
    return out


def import_graph(modules: dict[str, Path], package: str = PACKAGE
                 ) -> tuple[dict[str, set[str]], dict[Edge, int]]:
    """``(graph, lines)``: the modules each module imports (within ``package``), and the line
    of the first import statement of each edge."""
    graph: dict[str, set[str]] = {m: set() for m in modules}
    lines: dict[Edge, int] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for target in _imported(node, name, is_pkg, modules):
                if target != package and not target.startswith(package + "."):
                    continue
                graph[name].add(target)
                lines.setdefault((name, target), node.lineno)
    return graph, lines


def unresolved_imports(graph: dict[str, set[str]], modules: dict[str, Path],
                       lines: dict[Edge, int]) -> list[str]:
    """Imports of package modules that do not exist."""
    return [
        f"{src}:{lines[src, dst]} imports {dst}, which is not a module of the package"
        for src in sorted(graph) for dst in sorted(graph[src]) if dst not in modules
    ]


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) per strongly connected component that has one."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan; the graphs are small, recursion is fine
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph.get(v, ()):
                components.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_cycle_in(comp, graph) for comp in components]


def _cycle_in(comp: list[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest cycle through ``comp[0]`` inside the strongly connected ``comp``."""
    start, inside = comp[0], set(comp)
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & inside):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [*reversed(path), start]
                if w not in parent:
                    parent[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"{comp} is not strongly connected")  # pragma: no cover


def layer_of(module: str, package: str = PACKAGE) -> int | None:
    """The layer of a module of the package (``None``: the top-level ``__init__`` or unknown)."""
    parts = module.split(".")
    if len(parts) < 2:
        return None
    return LAYERS.get(parts[1])


def layer_violations(graph: dict[str, set[str]], lines: dict[Edge, int],
                     package: str = PACKAGE) -> list[str]:
    """Imports from a higher layer, of the top-level package, and modules without a layer."""
    out = []
    for src in sorted(graph):
        if src == package:
            continue  # the top-level __init__ gathers every layer
        ls = layer_of(src, package)
        if ls is None:
            out.append(f"{src} belongs to no layer (add its top-level name to LAYERS)")
            continue
        for dst in sorted(graph[src]):
            where = f"{src}:{lines[src, dst]}"
            if dst == package:
                out.append(f"{where} imports the top-level package {package} (it imports "
                           "every layer): import the module that defines the name")
                continue
            ld = layer_of(dst, package)
            if ld is not None and ld > ls:
                out.append(f"{where} imports {dst}: layer {ld} above its own layer {ls}")
    return out


def imports_of_testing(graph: dict[str, set[str]], lines: dict[Edge, int],
                      package: str = PACKAGE) -> list[str]:
    """Library modules (outside ``testing`` and ``bench``) that import ``<package>.testing``."""
    testing = f"{package}.testing"
    exempt = (testing, f"{package}.bench")
    return [
        f"{src}:{lines[src, dst]} imports {dst}"
        for src in sorted(graph) if src != package
        and not any(src == e or src.startswith(e + ".") for e in exempt)
        for dst in sorted(graph[src]) if dst == testing or dst.startswith(testing + ".")
    ]


def long_modules(modules: dict[str, Path], max_lines: int = MAX_LINES) -> list[str]:
    """Modules over ``max_lines`` lines whose docstring's second paragraph does not start with
    ``Long module:`` (followed by the reason)."""
    out = []
    for name, path in sorted(modules.items()):
        text = path.read_text()
        n = len(text.splitlines())
        if n <= max_lines:
            continue
        doc = ast.get_docstring(ast.parse(text)) or ""
        paragraphs = [p.strip() for p in doc.split("\n\n") if p.strip()]
        if len(paragraphs) < 2 or not paragraphs[1].startswith(LONG_MARK):
            out.append(f"{name}: {n} lines > {max_lines}, and its docstring has no second "
                       f"paragraph starting '{LONG_MARK} <reason>'")
    return out


def _defined_under(fn: object, root: Path) -> bool:
    code = getattr(fn, "__code__", None)
    if code is None:
        return False
    return Path(code.co_filename).resolve().is_relative_to(root.resolve())


def _missing(fn: Callable, *, is_init: bool) -> list[str]:
    """The parameters (but a leading ``self``/``cls``) and return lacking an annotation."""
    ann = getattr(fn, "__annotations__", {})
    params = list(inspect.signature(fn, follow_wrapped=False).parameters)
    if params and params[0] in ("self", "cls"):
        params = params[1:]
    out = [f"parameter '{p}'" for p in params if p not in ann]
    if not is_init and "return" not in ann:
        out.append("the return")
    return out


def _methods(klass: type) -> Iterable[tuple[str, Callable]]:
    """The public methods (and ``__init__``/``__new__``) of one class's own namespace."""
    for name, attr in vars(klass).items():
        if name.startswith("_") and name not in ("__init__", "__new__"):
            continue
        if isinstance(attr, (staticmethod, classmethod)):
            attr = attr.__func__
        if isinstance(attr, property):
            yield from ((name, f) for f in (attr.fget, attr.fset, attr.fdel) if f is not None)
        elif callable(attr):
            yield name, attr


def unannotated(objects: Iterable[tuple[str, object]], root: Path) -> list[str]:
    """Public functions, and public methods of public classes, defined under ``root`` whose
    parameters (but ``self``/``cls``) or return (but ``__init__``'s) lack annotations."""
    out: list[str] = []
    seen: set[int] = set()

    def check(qual: str, fn: Callable, is_init: bool = False) -> None:
        fn = inspect.unwrap(fn)
        if not inspect.isfunction(fn) or not _defined_under(fn, root) or id(fn) in seen:
            return
        seen.add(id(fn))
        missing = _missing(fn, is_init=is_init)
        if missing:
            out.append(f"{qual}: {', '.join(missing)} not annotated")

    for qual, obj in objects:
        if inspect.isclass(obj):
            for klass in obj.__mro__:
                owner = qual if klass is obj else f"{klass.__module__}.{klass.__qualname__}"
                for name, fn in _methods(klass):
                    check(f"{owner}.{name}", fn, is_init=name == "__init__")
        elif callable(obj):
            check(qual, obj)
    return out


# -- the library ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def layout() -> tuple[dict[str, Path], dict[str, set[str]], dict[Edge, int]]:
    modules = collect_modules(ROOT)
    graph, lines = import_graph(modules)
    return modules, graph, lines


def _in_area(module: str, area: str) -> bool:
    prefix = f"{PACKAGE}.{area}"
    return module == prefix or module.startswith(prefix + ".")


def test_every_import_resolves(layout):
    modules, graph, lines = layout
    bad = unresolved_imports(graph, modules, lines)
    assert not bad, "imports of modules that do not exist:\n" + "\n".join(bad)


def test_no_import_cycles(layout):
    _, graph, _ = layout
    cycles = find_cycles(graph)
    assert not cycles, "import cycles (function-level imports included):\n" + "\n".join(
        " -> ".join(c) for c in cycles
    )


@pytest.mark.parametrize("area", sorted(LAYERS))
def test_imports_follow_the_layers(layout, area):
    _, graph, lines = layout
    bad = [v for v in layer_violations(graph, lines) if _in_area(v.split(":")[0].split()[0], area)]
    assert not bad, f"wrong-way imports in {PACKAGE}.{area}:\n" + "\n".join(bad)


def test_every_module_has_a_layer(layout):
    _, graph, _ = layout
    bad = [m for m in graph if m != PACKAGE and layer_of(m) is None]
    assert not bad, f"modules of no layer (add them to LAYERS): {bad}"


def test_library_does_not_import_testing(layout):
    _, graph, lines = layout
    bad = imports_of_testing(graph, lines)
    assert not bad, f"library modules importing {PACKAGE}.testing:\n" + "\n".join(bad)


@pytest.mark.parametrize("area", sorted(LAYERS))
def test_modules_are_short_or_say_why(layout, area):
    modules, _, _ = layout
    bad = long_modules({m: p for m, p in modules.items() if _in_area(m, area)})
    assert not bad, "\n".join(bad)


def test_top_level_module_is_short_or_says_why(layout):
    modules, _, _ = layout
    assert not long_modules({PACKAGE: modules[PACKAGE]})


@pytest.mark.parametrize("package", PUBLIC_PACKAGES)
def test_public_api_is_annotated(package):
    mod = importlib.import_module(package)
    names = getattr(mod, "__all__", None)
    assert names is not None, f"{package} has no __all__"
    absent = [n for n in names if not hasattr(mod, n)]
    assert not absent, f"{package}.__all__ names missing attributes: {absent}"
    bad = unannotated(((f"{package}.{n}", getattr(mod, n)) for n in names), ROOT)
    assert not bad, f"unannotated public API of {package}:\n" + "\n".join(bad)


# -- the checker itself, on a synthetic package --------------------------------------------------
SYNTHETIC = {
    "__init__.py": "from . import frames, reps\n",
    "_math.py": "",
    "testing.py": "from .reps import f\n",
    "reps/__init__.py": "from .a import f\n",
    # a cycle a <-> b hidden in a function-level import of a sibling
    "reps/a.py": "from .._math import *\n\n\ndef f():\n    from . import b\n    return b\n",
    "reps/b.py": "from .a import f\n",
    # a wrong-way import hidden in a method
    "reps/d.py": "class K:\n    def m(self):\n        from ..frames.c import x\n",
    "reps/e.py": "from ..testing import helper\nfrom ..nowhere import z\n",
    "reps/big.py": '"""Big."""\n' + "x = 1\n" * 520,
    "reps/big_ok.py": '"""Big.\n\nLong module: one table.\n"""\n' + "x = 1\n" * 520,
    "reps/big_vague.py": '"""Big.\n\nIt is long. Long module: one table.\n"""\n' + "x = 1\n" * 520,
    "frames/__init__.py": "",
    "frames/c.py": "import pkg.reps.a\nfrom ..reps import f\nimport torch\n",
    "frames/g.py": "from .. import _math, reps\n",
    "frames/h.py": "import pkg\n",
}


@pytest.fixture
def synthetic(tmp_path):
    for rel, text in SYNTHETIC.items():
        path = tmp_path / "pkg" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    modules = collect_modules(tmp_path / "pkg", "pkg")
    graph, lines = import_graph(modules, "pkg")
    return modules, graph, lines


def test_checker_resolves_imports(synthetic):
    modules, graph, lines = synthetic
    assert graph["pkg.reps.a"] == {"pkg._math", "pkg.reps.b"}  # `from . import b`: the module
    assert graph["pkg.frames.c"] == {"pkg.reps.a", "pkg.reps"}  # absolute; package __init__
    assert graph["pkg.frames.g"] == {"pkg._math", "pkg.reps"}
    assert graph["pkg"] == {"pkg.frames", "pkg.reps"}
    assert graph["pkg.reps.d"] == {"pkg.frames.c"}
    assert unresolved_imports(graph, modules, lines) == [
        "pkg.reps.e:2 imports pkg.nowhere, which is not a module of the package"
    ]


def test_checker_finds_a_cycle_through_a_function_level_import(synthetic):
    _, graph, _ = synthetic
    assert find_cycles(graph) == [["pkg.reps.a", "pkg.reps.b", "pkg.reps.a"]]
    assert find_cycles({"x": {"x"}, "y": set()}) == [["x", "x"]]
    assert find_cycles({"x": {"y"}, "y": {"z"}, "z": {"x"}}) == [["x", "y", "z", "x"]]
    assert find_cycles({"x": {"y"}, "y": {"z"}, "z": set()}) == []


def test_checker_finds_wrong_way_imports(synthetic):
    _, graph, lines = synthetic
    bad = layer_violations(graph, lines, "pkg")
    assert bad == [
        "pkg.frames.h:1 imports the top-level package pkg (it imports every layer): import the "
        "module that defines the name",
        "pkg.reps.d:3 imports pkg.frames.c: layer 3 above its own layer 2",
        "pkg.reps.e:1 imports pkg.testing: layer 7 above its own layer 2",
    ]
    assert imports_of_testing(graph, lines, "pkg") == ["pkg.reps.e:1 imports pkg.testing"]


def test_checker_finds_long_modules(synthetic):
    modules, _, _ = synthetic
    bad = long_modules(modules)
    assert [b.split(":")[0] for b in bad] == ["pkg.reps.big", "pkg.reps.big_vague"]
    assert "521 lines" in bad[0]


SYNTHETIC_API = '''
class A:
    def __init__(self, x: int):
        pass

    def good(self, y: int) -> int:
        return y

    def bad(self, y) -> int:
        return y

    @property
    def p(self):
        return 1

    @staticmethod
    def s(a: int, b) -> None:
        pass

    def _private(self, z):
        pass


class B(A):
    def __init__(self, x):
        pass


def f(a: int, *args, **kw: int) -> int:
    return a


def g(a: int):
    return a


def ok(a: int, *, b: str = "") -> int:
    return a
'''


def test_checker_finds_unannotated_api(tmp_path):
    path = tmp_path / "api.py"
    path.write_text(SYNTHETIC_API)
    spec = importlib.util.spec_from_file_location("_layout_api", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    try:
        spec.loader.exec_module(mod)
        names = ["A", "B", "f", "g", "ok"]
        bad = unannotated([(f"api.{n}", getattr(mod, n)) for n in names], tmp_path)
    finally:
        del sys.modules[spec.name]
    assert sorted(bad) == [
        "api.A.bad: parameter 'y' not annotated",
        "api.A.p: the return not annotated",
        "api.A.s: parameter 'b' not annotated",
        "api.B.__init__: parameter 'x' not annotated",
        "api.f: parameter 'args' not annotated",
        "api.g: the return not annotated",
    ]
    # code outside the root (here: all of it) is not checked
    assert unannotated([(f"api.{n}", getattr(mod, n)) for n in names], ROOT) == []
