"""``statusbridge copy``: records and batch definitions between any two backends, idempotent."""

from __future__ import annotations

import io
from pathlib import Path

from statusbridge import BatchManager, StatusStore
from statusbridge.cli import main
from statusbridge.store._shelf import open_shelf


def test_folder_to_sqlite_to_redis_and_back_keeps_seq(tmp_path: Path, redis_url: str) -> None:
    folder, back = str(tmp_path / "status"), str(tmp_path / "back")
    sqlite = f"sqlite:///{tmp_path}/status.db"
    with StatusStore(folder) as store:
        for i in range(5):
            store.update("a", progress=i / 5, meta={"i": i})
        store.update("b", status="completed", result={"ok": True})
        original = store.scan()
    (Path(folder) / "bad.json").write_text("{")
    out = io.StringIO()
    assert main(["copy", "--from", folder, "--to", sqlite], out=out) == 0
    assert "copied 2 record(s)" in out.getvalue() and "skipped bad.json" in out.getvalue()
    assert main(["copy", "--from", sqlite, "--to", redis_url], out=io.StringIO()) == 0
    assert main(["copy", "--from", redis_url, "--to", back], out=io.StringIO()) == 0
    for location in (sqlite, redis_url, back):
        with StatusStore(location) as copy:
            assert copy.scan() == original, location  # seq, times, meta: all as they were
    again = io.StringIO()
    assert main(["copy", "--from", folder, "--to", sqlite], out=again) == 0
    assert "copied 0 record(s)" in again.getvalue() and "(2 already there)" in again.getvalue()
    with StatusStore(sqlite) as copy:
        newer = copy.update("a", message="moved on")
    main(["copy", "--from", folder, "--to", sqlite], out=io.StringIO())
    with StatusStore(sqlite) as copy:
        assert copy.read("a") == newer  # an older seq never overwrites a newer one


def test_batch_definitions_follow_between_urls(tmp_path: Path) -> None:
    source = f"sqlite:///{tmp_path}/a.db"
    target = f"sqlite:///{tmp_path}/b.db"
    with BatchManager(status_dir=source) as manager:
        batch_id = manager.create_custom_batch([{"x": 1}, {"x": 2}], "two")
    main(["copy", "--from", source, "--to", target], out=io.StringIO())
    out = io.StringIO()
    main(["copy", "--from", source, "--to", target], out=out)
    assert "0 batch definition(s) (1 already there)" in out.getvalue()
    shelf = open_shelf(target)
    try:
        assert shelf.names() == [batch_id]
    finally:
        shelf.close()
    with BatchManager(status_dir=target) as moved:
        summary = moved.get_batch_status(batch_id)
        assert summary is not None and summary.total == 2
