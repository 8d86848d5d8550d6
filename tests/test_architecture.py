"""The one-way import rule of the house (docs/architecture.md): the core ``msdm`` never imports Lightning, the
Lightning shells or the command line at module level, no core module imports the command line at all, and the
packages import each other without cycles."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHELLS = ("lightning", "lightning_modules", "datamodules")
CLI = ("msdm.commands", "msdm.cli", "msdm.__main__")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_alias_shim(tree: ast.Module) -> bool:
    """A deprecated alias module (msdm._compat.alias_module): a pointer to the new home, not a dependency."""
    return any(isinstance(n, ast.Expr) and isinstance(n.value, ast.Call) and getattr(n.value.func, "id", "") ==
               "alias_module" for n in tree.body)


def _imports(path: Path):
    """``(imported module, at module level?)`` of every import in ``path``; a module-level ``__getattr__`` (the
    lazy deprecated names of a moved module) is not counted."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    if _is_alias_shim(tree):
        return
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def walk(body, top):
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if not (top and node.name == "__getattr__"):
                    yield from walk(node.body, False)
            elif isinstance(node, ast.ClassDef):
                yield from walk(node.body, top)
            elif isinstance(node, ast.Import):
                for a in node.names:
                    yield a.name, top
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module
                yield mod, top
                for a in node.names:  # `from msdm import pipeline` imports msdm.pipeline
                    yield f"{mod}.{a.name}", top
            else:
                for field in ("body", "orelse", "finalbody", "handlers"):
                    sub = getattr(node, field, None)
                    if isinstance(sub, list):
                        yield from walk(sub, top)

    yield from walk(tree.body, True)


def _core_files():
    return [p for p in sorted((ROOT / "msdm").rglob("*.py")) if not _module_name(p).startswith(CLI)]


def _matches(mod: str, prefixes) -> bool:
    return any(mod == p or mod.startswith(p + ".") for p in prefixes)


def test_core_never_imports_lightning_or_shells_at_module_level():
    bad = [(_module_name(p), mod) for p in sorted((ROOT / "msdm").rglob("*.py")) for mod, top in _imports(p)
           if top and _matches(mod, SHELLS)]
    assert not bad, f"module-level imports of Lightning or its shells in msdm/: {bad}"


def test_core_never_imports_the_command_line():
    bad = [(_module_name(p), mod) for p in _core_files() for mod, _ in _imports(p) if _matches(mod, CLI)]
    assert not bad, f"core modules importing msdm.commands / msdm.cli (also inside functions): {bad}"


def _node(mod: str) -> str | None:
    """The package a module belongs to: ``msdm.<first part>`` (a subpackage or a top-level module), and one layer
    ``msdm.testing`` for every test-support module (``msdm/testing.py``, ``msdm/lora/testing.py``, ...): tiny
    components built from the whole library, for tests, benches and the quickstart."""
    parts = mod.split(".")
    if parts[0] == "msdm" and parts[-1] == "testing":
        return "msdm.testing"
    if parts[0] == "msdm":
        return ".".join(parts[:2]) if len(parts) > 1 else "msdm"
    return parts[0] if parts[0] in ("lightning_modules", "datamodules") else None


def test_no_import_cycle_between_packages():
    edges: dict[str, set[str]] = {}
    files = [p for d in ("msdm", "lightning_modules", "datamodules") for p in sorted((ROOT / d).rglob("*.py"))]
    for p in files:
        src = _node(_module_name(p))
        for mod, _ in _imports(p):
            dst = _node(mod) if mod else None
            if dst and dst != src and dst != "msdm":
                edges.setdefault(src, set()).add(dst)
    # depth-first search for a back edge
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(n):
        state[n] = 1
        path.append(n)
        for m in sorted(edges.get(n, ())):
            if state.get(m) == 1:
                raise AssertionError(f"import cycle: {' -> '.join(path[path.index(m):] + [m])}")
            if m not in state:
                visit(m)
        path.pop()
        state[n] = 2

    for n in sorted(edges):
        if n not in state:
            visit(n)
    assert "msdm.generators" in edges and "msdm.synthetic" in edges  # the walk saw the packages


def test_importing_every_core_module_loads_no_lightning():
    """A fresh interpreter imports every core module: Lightning and the shells stay out of ``sys.modules``."""
    names = [_module_name(p) for p in _core_files()]
    code = ("import importlib, sys, warnings\nwarnings.simplefilter('ignore')\n"
            f"for n in {names!r}:\n    importlib.import_module(n)\n"
            f"loaded = sorted(m for m in sys.modules if m.split('.')[0] in {SHELLS!r})\nprint(loaded)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env={**__import__("os").environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout


@pytest.mark.parametrize("old, new, name", [
    ("msdm.data.synthetic", "msdm.synthetic", "SyntheticGIDataset"),
    ("msdm.metrics.frechet", "msdm.metrics.realism.frechet", "frechet_distance"),
    ("msdm.metrics.scene_detector", "msdm.synthetic.scene_detector", "SceneDetector"),
    ("lightning_modules.ema", "msdm.training.ema", "EMA"),
])
def test_moved_modules_keep_their_old_import_path(old, new, name):
    import importlib

    with pytest.warns(DeprecationWarning, match="moved to"):
        sys.modules.pop(old, None)
        mod = importlib.import_module(old)
    assert mod is importlib.import_module(new) and hasattr(mod, name)
