"""Copying records and batch definitions from one location to another (``statusbridge copy``).

Works between any two backends, through each one's store (``scan_report`` and
``put_records``) and shelf, so a fourth backend is copied from and to without a
line here. Idempotent: a record is written only where the target holds no record
of that job or an older ``seq`` (records keep their ``seq`` and times), and a
definition only where the target's differs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from statusbridge.store._location import Location
from statusbridge.store._shelf import open_shelf
from statusbridge.store._store import StatusStore

__all__ = ["CopyReport", "copy_location"]


@dataclass
class CopyReport:
    records: int = 0  # written to the target
    records_kept: int = 0  # already there as new or newer
    batches: int = 0
    batches_kept: int = 0
    invalid: dict[str, str] = field(default_factory=dict)  # skipped at the source, and why


def copy_location(
    source: str | os.PathLike[str] | Location,
    target: str | os.PathLike[str] | Location,
    *,
    batches_from: str | os.PathLike[str] | Location | None = None,
    batches_to: str | os.PathLike[str] | Location | None = None,
) -> CopyReport:
    """Copy every valid record of ``source`` to ``target``, then the batch definitions
    from ``batches_from`` to ``batches_to`` (each defaults to its status location when
    that is a URL; with a folder, definitions are copied only when named)."""
    report = CopyReport()
    with StatusStore(source) as src, StatusStore(target) as dst:
        scanned = src.scan_report()
        report.invalid = scanned.invalid_records()
        report.records = dst.put_records(scanned.jobs.values())
        report.records_kept = len(scanned.jobs) - report.records
    shelves_from = batches_from if batches_from is not None else _url_or_none(source)
    shelves_to = batches_to if batches_to is not None else _url_or_none(target)
    if shelves_from is None or shelves_to is None:
        return report
    origin = open_shelf(shelves_from, create=False)
    destination = open_shelf(shelves_to)
    try:
        for name in origin.names():
            data = origin.get(name)
            if data is None:
                continue
            if destination.get(name) == data:
                report.batches_kept += 1
                continue
            destination.put(name, data)
            report.batches += 1
    finally:
        origin.close()
        destination.close()
    return report


def _url_or_none(location: str | os.PathLike[str] | Location) -> str | Location | None:
    from statusbridge.store._location import backend_for

    backend, where = backend_for(location)
    return None if backend.name == "folder" else where
