"""When a reconcile tick lists every file: the rules of cache._safety_net, one by one."""

from __future__ import annotations

import os
from pathlib import Path

from statusbridge.cache.folder._safety_net import FULL_EVERY, SafetyNet, folder_stamp


def test_quiet_folder_with_trusted_events_needs_no_full_reconcile(tmp_path: Path) -> None:
    net = SafetyNet()
    net.full_done(events=0, stamp=folder_stamp(str(tmp_path)))
    for _ in range(FULL_EVERY - 1):
        assert not net.needs_full(trusted=True, events=0, stamp=folder_stamp(str(tmp_path)))
    # ...but every FULL_EVERY-th tick is a full one anyway
    assert net.needs_full(trusted=True, events=0, stamp=folder_stamp(str(tmp_path)))


def test_folder_changed_with_events_seen_needs_no_full_reconcile(tmp_path: Path) -> None:
    net = SafetyNet()
    net.full_done(events=0, stamp=folder_stamp(str(tmp_path)))
    (tmp_path / "a.json").write_text("{}")
    assert not net.needs_full(trusted=True, events=1, stamp=folder_stamp(str(tmp_path)))


def test_folder_changed_without_an_event_needs_a_full_reconcile(tmp_path: Path) -> None:
    net = SafetyNet()
    net.full_done(events=3, stamp=folder_stamp(str(tmp_path)))
    (tmp_path / "a.json").write_text("{}")  # an entry added: the folder's mtime moves...
    # ...at the kernel's coarse clock, which may not have ticked yet: move it for sure.
    os.utime(tmp_path, ns=(0, 123_456_789))
    assert net.needs_full(trusted=True, events=3, stamp=folder_stamp(str(tmp_path)))


def test_untrusted_events_need_a_full_reconcile_every_tick(tmp_path: Path) -> None:
    net = SafetyNet()
    net.full_done(events=0, stamp=folder_stamp(str(tmp_path)))
    assert net.needs_full(trusted=False, events=0, stamp=folder_stamp(str(tmp_path)))


def test_a_vanished_folder_has_no_stamp(tmp_path: Path) -> None:
    assert folder_stamp(str(tmp_path / "missing")) is None
