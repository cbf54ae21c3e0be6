"""The gate over watchdog's move grouping: renames inside a folder still pair, renames
into it from an unwatched folder (what every store write is) skip the search."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from statusbridge.cache._watcher import _MoveSearchGate, stop_observer

from support.waiting import wait_until

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the gate is for watchdog's inotify grouper"
)


class _Recorder(FileSystemEventHandler):
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []
        self.lock = threading.Lock()

    def on_any_event(self, event: FileSystemEvent) -> None:
        with self.lock:
            self.events.append(
                (
                    event.event_type,
                    os.path.basename(os.fsdecode(event.src_path)),
                    os.path.basename(os.fsdecode(event.dest_path)),
                )
            )

    def seen(self, kind: str, src: str, dest: str = "") -> bool:
        with self.lock:
            return (kind, src, dest) in self.events


def test_renames_pair_inside_the_folder_and_skip_the_search_from_outside(
    tmp_path: Path,
) -> None:
    watched, outside = tmp_path / "watched", tmp_path / "outside"
    watched.mkdir()
    outside.mkdir()
    recorder = _Recorder()
    observer = Observer()
    observer.start()
    try:
        observer.schedule(recorder, str(watched))
        _MoveSearchGate.install(observer)  # as FolderWatch does
        (emitter,) = observer.emitters
        gate = emitter._inotify._move_event_grouper.put_event.__self__  # type: ignore[attr-defined]
        assert isinstance(gate, _MoveSearchGate)

        (outside / "staged").write_text("{}")
        os.replace(outside / "staged", watched / "job-1.json")  # as a store writes
        wait_until(
            lambda: recorder.seen("moved", "job-1.json") or recorder.seen("created", "job-1.json"),
            message="the rename in",
        )
        assert gate.put == 0  # no IN_MOVED_FROM: the search was skipped

        os.rename(watched / "job-1.json", watched / "job-2.json")
        wait_until(
            lambda: recorder.seen("moved", "job-1.json", "job-2.json"),
            message="the rename inside, paired",
        )
        assert (gate.put, gate.paired) == (1, 1)
        assert not recorder.seen("deleted", "job-1.json")
    finally:
        stop_observer(observer)
