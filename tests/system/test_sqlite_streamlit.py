"""The demo app and the Streamlit adapter with ``STATUSBRIDGE_DIR`` set to a sqlite:// URL."""

from __future__ import annotations

import contextlib
import re
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.waiting import wait_until

st = pytest.importorskip("streamlit", reason="the demo extra is not installed")
from streamlit.testing.v1 import AppTest  # noqa: E402

from statusbridge import streamlit as sbst  # noqa: E402

pytestmark = pytest.mark.slow
APP = Path(__file__).resolve().parents[2] / "demo_app.py"


@pytest.fixture
def url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    location = f"sqlite:///{tmp_path}/status.db"
    monkeypatch.setenv("STATUSBRIDGE_DIR", location)
    monkeypatch.delenv("STATUSBRIDGE_BATCH_DIR", raising=False)
    main = sys.modules["__main__"]
    yield location
    sys.modules["__main__"] = main  # AppTest leaves the script as __main__
    for executor in ("thread", "process"):
        sbst.get_manager(location, location, executor=executor).shutdown(wait=True)
    sbst.get_cache(location).close()
    st.cache_resource.clear()


def test_demo_runs_a_batch_on_processes_through_a_sqlite_url(url: str, tmp_path: Path) -> None:
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    by_label = {w.label: w for w in at.number_input}
    by_label["Number of jobs"].set_value(3)
    by_label["Seconds per job"].set_value(0.2)
    at.slider[0].set_value(0.0)
    at.radio[0].set_value("processes")
    next(b for b in at.button if b.label == "Start batch").click()
    at.run()
    assert not at.exception, at.exception
    manager = sbst.get_manager(url, url, executor="process")
    batch_id = manager.list_batches()[0].id or ""
    wait_until(lambda: manager.get_batch_status(batch_id).is_done, 60)  # type: ignore[union-attr]
    at.run()
    shown = "\n".join(str(m.value) for m in [*at.markdown, *at.caption])
    # Job text reaches Markdown escaped (sbst.escape_markdown): read it as a person does.
    assert "3 jobs on processes: completed 100% (3 completed)" in re.sub(r"\\(.)", r"\1", shown)
    with (
        contextlib.closing(sqlite3.connect(tmp_path / "status.db")) as conn,
        conn,
    ):  # records and definition together
        assert conn.execute("SELECT count(*) FROM jobs").fetchone()[0] == 3
        assert conn.execute("SELECT count(*) FROM batches").fetchone()[0] == 1
    assert not (tmp_path / "batches").exists()
