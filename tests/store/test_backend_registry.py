"""The backend seam: one registry, real signatures, refused options named, no import cycles."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

from statusbridge import BatchManager, StatusCache, StatusStore
from statusbridge.store._location import SqliteLocation, backend_for, parse_location

PACKAGE = Path(__file__).resolve().parents[2] / "statusbridge"
UNUSED_REDIS = "redis://127.0.0.1:1/0?prefix=registry"  # options are checked before connecting


def test_each_location_kind_has_one_backend(tmp_path: Path) -> None:
    assert backend_for(tmp_path)[0].name == "folder"
    assert backend_for(f"file://{tmp_path}")[0].name == "folder"
    assert backend_for(UNUSED_REDIS)[0].name == "redis"
    assert backend_for("rediss://h")[0].name == "redis"
    backend, where = backend_for(f"sqlite:///{tmp_path}/s.db")
    assert backend.name == "sqlite" and isinstance(where, SqliteLocation)
    assert backend_for(where)[1] is where  # a parsed location is taken as it is


def test_sqlite_urls_follow_sqlalchemy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    relative = parse_location("sqlite:///data/status.db")
    assert isinstance(relative, SqliteLocation)
    assert relative.path == tmp_path / "data" / "status.db"
    absolute = parse_location("sqlite:////srv/app/status.db")
    assert isinstance(absolute, SqliteLocation) and absolute.path == Path("/srv/app/status.db")
    assert str(relative) == f"sqlite:///{tmp_path}/data/status.db"  # reopened the same anywhere
    for bad, why in (
        ("sqlite://host/status.db", "host part"),
        ("sqlite:///", "no database file"),
        ("sqlite:///x.db?mode=ro", "no query"),
        ("sqlite:///:memory:", "in-memory"),
        ("sqlite:/x.db", "starts sqlite://"),
    ):
        with pytest.raises(ValueError, match=why) as info:
            StatusStore(bad)
        assert repr(bad) in str(info.value)


def test_signatures_show_the_real_options() -> None:
    store = inspect.signature(StatusStore).parameters
    assert {
        "durable",
        "max_bytes",
        "lock_timeout",
        "file_mode",
        "stream_maxlen",
        "log_keep",
    } <= set(store)
    cache = inspect.signature(StatusCache).parameters
    assert {"reconcile_interval", "polling", "poll_interval", "max_bytes"} <= set(cache)
    assert "args" not in store and "kw" not in store and "kw" not in cache


@pytest.mark.parametrize(
    ("opener", "kind", "option", "value"),
    [
        (StatusStore, "folder", "stream_maxlen", 5),
        (StatusStore, "folder", "log_keep", 5),
        (StatusStore, "redis", "file_mode", 0o600),
        (StatusStore, "redis", "log_keep", 5),
        (StatusStore, "sqlite", "stream_maxlen", 5),
        (StatusCache, "redis", "polling", True),
        (StatusCache, "sqlite", "poll_interval", 1.0),
        (StatusCache, "sqlite", "max_bytes", 10),
    ],
)
def test_an_option_a_backend_does_not_take_is_refused_by_name(
    tmp_path: Path, opener: type, kind: str, option: str, value: object
) -> None:
    location = {
        "folder": str(tmp_path / "f"),
        "redis": UNUSED_REDIS,
        "sqlite": f"sqlite:///{tmp_path}/s.db",
    }[kind]
    with pytest.raises(TypeError, match=f"^{option}: not an option of the {kind} backend"):
        opener(location, **{option: value})
    assert list(tmp_path.iterdir()) == []  # refused before anything was made


def test_a_backend_class_called_directly_refuses_the_same() -> None:
    from statusbridge.store.redis._store import RedisStore

    with pytest.raises(TypeError, match="^file_mode: not an option of the redis backend"):
        RedisStore(UNUSED_REDIS, file_mode=0o600)  # type: ignore[call-arg]


def test_base_classes_never_import_their_backends() -> None:
    """No module-level import of a backend by store/_store.py, cache/_cache.py or the registry."""
    backends = {
        f"statusbridge.{layer}.{backend}{module}"
        for layer, own in (("store", "_store"), ("cache", "_cache"))
        for backend in ("folder", "redis", "sqlite")
        for module in ("", f".{own}")
    }
    for core in ("store/_store.py", "cache/_cache.py", "store/_location.py", "store/_shelf.py"):
        tree = ast.parse((PACKAGE / core).read_text())
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)} | {
            a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names
        }
        assert not imported & backends, f"{core} imports {imported & backends}"


def test_a_folder_location_imports_no_other_backend(tmp_path: Path) -> None:
    code = (
        "import sys; from statusbridge import StatusStore, StatusCache; "
        f"d = {str(tmp_path)!r}; StatusStore(d).update('a'); StatusCache(d).close(); "
        "loaded = {m for m in sys.modules if m.startswith('statusbridge.') and "
        "('sqlite' in m or 'redis' in m)}; assert not loaded, loaded; "
        "assert 'sqlite3' not in sys.modules and 'redis' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_batch_location_and_the_deprecated_batch_dir(tmp_path: Path) -> None:
    folder = tmp_path / "defs"
    with BatchManager(folder, 1, tmp_path / "status") as manager:
        assert manager.batch_location == str(folder)
        with pytest.warns(DeprecationWarning, match="batch_location"):
            assert manager.batch_dir == folder
    url = f"sqlite:///{tmp_path}/s.db"
    with BatchManager(status_dir=url) as manager:
        assert manager.batch_location == url
        with (
            pytest.warns(DeprecationWarning, match="batch_location"),
            pytest.raises(ValueError, match="not in a folder"),
        ):
            manager.batch_dir  # noqa: B018
