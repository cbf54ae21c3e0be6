"""The folder layout is the architecture: each layer imports only the layers below it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "statusbridge"
LAYERS = ["errors", "record", "store", "cache", "jobs"]


def imported_layers(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.startswith("statusbridge.")
        ):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {
                a.name.split(".")[1] for a in node.names if a.name.startswith("statusbridge.")
            }
    return found


def test_arrows_only_point_down() -> None:
    for rank, layer in enumerate(LAYERS):
        allowed = set(LAYERS[: rank + 1])
        files = [PACKAGE / "errors.py"] if layer == "errors" else (PACKAGE / layer).rglob("*.py")
        for path in files:
            wrong = imported_layers(path) - allowed
            assert not wrong, f"{path.relative_to(PACKAGE)} imports {wrong} (layer {layer})"


def test_core_does_not_import_streamlit() -> None:
    code = (
        "import sys, statusbridge, statusbridge.cli, statusbridge.demo; "
        "assert 'streamlit' not in sys.modules, 'core imported streamlit'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_display_helpers_are_toolkit_free_and_core_does_not_import_qt() -> None:
    """statusbridge.display (shared by the Qt and Tk views) needs only the record layer."""
    assert imported_layers(PACKAGE / "display.py") <= {"record"}
    code = (
        "import sys, statusbridge, statusbridge.cli, statusbridge.display; "
        "assert 'PySide6' not in sys.modules, 'the core imported PySide6'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_web_is_an_adapter_and_core_does_not_import_starlette() -> None:
    """statusbridge.web builds on the layers (never on another adapter); only it and the
    Streamlit push route import starlette, and the core loads neither."""
    for path in (PACKAGE / "web").rglob("*.py"):
        wrong = imported_layers(path) - {*LAYERS, "web"}
        assert not wrong, f"{path.relative_to(PACKAGE)} imports {wrong} (an adapter)"
    code = (
        "import sys, statusbridge, statusbridge.cli, statusbridge.display; "
        "assert 'starlette' not in sys.modules, 'the core imported starlette'; "
        "assert 'uvicorn' not in sys.modules, 'the core imported uvicorn'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_redis_and_dask_are_imported_only_for_a_url(tmp_path: Path) -> None:
    """redis-py is an optional extra: only the backend modules import it, and only on demand."""
    for path in PACKAGE.rglob("*.py"):
        source = path.read_text()
        if "import redis" in source or "from redis" in source:
            assert path.parent.name == "redis", f"{path.relative_to(PACKAGE)} imports redis"
    code = (
        "import sys, statusbridge, statusbridge.cli; "
        "from statusbridge import StatusStore, StatusCache; "
        f"StatusCache({str(tmp_path)!r}).close(); "
        "assert 'redis' not in sys.modules, 'a folder location imported redis'; "
        "assert 'distributed' not in sys.modules, 'the core imported dask'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_backends_sit_behind_a_shared_core() -> None:
    """store/ and cache/ show their backends; the shared core imports none at module level."""
    for layer, core in (("store", "_store.py"), ("cache", "_cache.py")):
        backends = sorted(p.parent.name for p in (PACKAGE / layer).glob("*/__init__.py"))
        assert backends == ["folder", "redis", "sqlite"], backends
        for backend in backends:
            own = (PACKAGE / layer / backend).glob("*.py")
            assert any(f"statusbridge.{layer}.{core[:-3]}" in p.read_text() for p in own), (
                f"{layer}/{backend}/ does not use {core}"
            )
        tree = ast.parse((PACKAGE / layer / core).read_text())
        top_level = {
            node.module for node in tree.body if isinstance(node, ast.ImportFrom) and node.module
        }
        assert not {
            m for m in top_level if any(m.startswith(f"statusbridge.{layer}.{b}") for b in backends)
        }


def test_the_jobs_layer_stays_in_small_parts() -> None:
    """Each module of the jobs layer holds at most 450 lines, each class at most 20 methods
    (not counting ``__dunder__`` ones): a part grown past that is split, not added to."""
    for path in sorted((PACKAGE / "jobs").glob("*.py")):
        lines = len(path.read_text().splitlines())
        assert lines <= 450, f"{path.name}: {lines} lines"
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                methods = [
                    f.name
                    for f in node.body
                    if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)
                    and not (f.name.startswith("__") and f.name.endswith("__"))
                ]
                assert len(methods) <= 20, f"{path.name}: {node.name} has {len(methods)} methods"
