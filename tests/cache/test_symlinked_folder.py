"""A status folder reached through a symlink gets live events, not only the reconcile."""

from __future__ import annotations

import os
from pathlib import Path

from statusbridge import StatusCache, StatusStore

from support.waiting import wait_until


def test_a_folder_reached_through_a_symlink_is_watched_live(tmp_path: Path) -> None:
    real = tmp_path / "real-status"
    real.mkdir()
    link = tmp_path / "status-link"
    link.symlink_to(real, target_is_directory=True)
    # No reconcile within the test: only an event can bring the write (before: the watch was
    # on the link itself and saw nothing, and the write arrived at the 30 s reconcile).
    with StatusCache(link, reconcile_interval=3600) as cache:
        health = cache.health()
        assert health.directory == str(link)
        assert health.watched_directory == os.path.realpath(real)
        StatusStore(link).update("via-link", progress=0.5)
        wait_until(lambda: cache.get("via-link"), 30, "the write through the link, by event")
        StatusStore(real).update("via-real", progress=0.25)
        wait_until(lambda: cache.get("via-real"), 30, "the write to the real folder, by event")
        assert cache.health().rescans == 0


def test_a_plain_folder_names_no_other_watched_folder(tmp_path: Path) -> None:
    with StatusCache(tmp_path) as cache:
        assert cache.health().watched_directory is None
