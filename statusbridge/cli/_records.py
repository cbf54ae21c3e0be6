"""The commands on records: ``ls``, ``show``, ``watch``, ``cancel`` and ``cleanup``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TextIO

from statusbridge.cache import StatusCache
from statusbridge.cache._snapshot import summarize
from statusbridge.cli._parser import DEFAULT_BATCH_DIR, EXIT_ATTENTION, EXIT_OK, CliError
from statusbridge.cli._render import invalid_lines, job_table, json_text, printable, summary_line
from statusbridge.errors import InvalidRecordError, StatusBridgeError
from statusbridge.jobs import request_cancel
from statusbridge.jobs._cancel import request_cancels
from statusbridge.jobs._definition import BatchDefinition
from statusbridge.jobs._definitions import mark_batch_cancelled
from statusbridge.jobs._unrecorded import cancel_unrecorded_at
from statusbridge.record import BatchJob, BatchStatus
from statusbridge.record._codec import job_to_dict
from statusbridge.record._model import utc_now
from statusbridge.store import ScanReport, StatusStore
from statusbridge.store._files import classify_name, unreadable_reason
from statusbridge.store._location import is_url, location_text

__all__ = ["cancel", "cleanup", "ls", "show", "watch"]


def _shown(location: Path | str) -> str:
    """A location for the screen: a folder as given, a URL without its password."""
    return str(location) if isinstance(location, Path) else location_text(location)


def _warn_invalid(report: ScanReport) -> None:
    for name, reason in sorted(report.invalid_records().items()):
        print(f"statusbridge: warning: {printable(name)}: {printable(reason)}", file=sys.stderr)


def ls(store: StatusStore, args: argparse.Namespace, out: TextIO) -> int:
    report = store.scan_report()
    _warn_invalid(report)
    jobs = list(report.jobs.values())
    if args.status:
        jobs = [j for j in jobs if j.status.value in args.status]
    if args.batch:
        jobs = [j for j in jobs if j.batch_id == args.batch]
    if args.json:
        docs = [job_to_dict(j) for j in sorted(jobs, key=lambda j: j.id)]
        print(json_text(docs), file=out)
    elif jobs:
        print(job_table(jobs, utc_now(), fit=out.isatty(), batch=args.batch), file=out)
    else:
        print("no jobs", file=out)
    return EXIT_OK


def show(store: StatusStore, job_id: str, out: TextIO) -> int:
    try:
        job = store.read(job_id)
    except InvalidRecordError as exc:
        raise CliError(str(exc), EXIT_ATTENTION) from None
    except OSError as exc:  # this record's problem (permissions, I/O), not the folder's
        raise CliError(f"{job_id}.json: {unreadable_reason(exc)}", EXIT_ATTENTION) from None
    if job is None:
        raise CliError(f"no job {job_id!r} in {store.label!r}", EXIT_ATTENTION)
    print(json_text(job_to_dict(job)), file=out)
    return EXIT_OK


def watch(folder: Path | str, args: argparse.Namespace, out: TextIO) -> int:
    tty = out.isatty()
    states = {BatchStatus(s) for s in args.status or ()}
    if tty and not args.once:
        from statusbridge.cli._live import run_live  # rich: only for the live view

        with StatusCache(folder) as cache:
            run_live(
                cache,
                _shown(folder),
                out,
                batch=args.batch,
                states=states,
                interval=args.interval,
                until_done=args.until_done,
            )
        return EXIT_OK
    with StatusCache(folder) as cache:
        last_drawn = -1
        while True:
            snap = cache.snapshot()
            jobs: Sequence[BatchJob] = snap.batch(args.batch) if args.batch else list(snap.values())
            if states:
                jobs = [j for j in jobs if j.status in states]
            if tty or snap.version != last_drawn:
                invalid = cache.health().invalid_files
                bad = {n: r for n, r in invalid.items() if classify_name(n) == "record"}
                _draw(folder, jobs, out, tty=tty, batch=args.batch, invalid=bad, once=args.once)
                last_drawn = snap.version
            if args.once:
                return EXIT_OK
            if args.until_done and all(job.is_finished for job in jobs):
                return EXIT_OK
            cache.wait_for_change(snap.version, timeout=args.interval)


def _draw(
    folder: Path | str,
    jobs: Sequence[BatchJob],
    out: TextIO,
    *,
    tty: bool,
    batch: str | None,
    invalid: Mapping[str, str],
    once: bool = False,
) -> None:
    now = utc_now()
    scope = f" batch {printable(batch)}" if batch else ""
    shown = printable(_shown(folder))
    hint = "" if once else "  (Ctrl-C to stop)"
    frame = [
        f"statusbridge watch {shown}{scope}  {now:%H:%M:%S} UTC{hint}",
        job_table(jobs, now, batch=batch) if jobs else "no jobs yet",
        *invalid_lines(invalid),
        summary_line(summarize(jobs)),
    ]
    text = "\n".join(frame)
    # Plain frames separated by a blank line (logs, pipes, and --once on a terminal).
    out.write(f"{text}\n\n" if not tty else f"{text}\n")
    out.flush()


def cancel(store: StatusStore, location: Path | str, args: argparse.Namespace, out: TextIO) -> int:
    if args.batch:
        return _cancel_batch(store, location, args, out)
    if request_cancel(store, args.job_id) or _cancel_unrecorded(store, location, args):
        print(f"cancel requested: {args.job_id}", file=out)
        return EXIT_OK
    job = store.read(args.job_id)
    if job is None:
        raise CliError(f"no job {args.job_id!r} in {store.label!r}", EXIT_ATTENTION)
    print(f"{args.job_id} is already {job.status.value}; nothing to cancel", file=out)
    return EXIT_ATTENTION


def _cancel_batch(
    store: StatusStore, location: Path | str, args: argparse.Namespace, out: TextIO
) -> int:
    """Mark the batch cancelled in its definition, then cancel its records.

    The marker comes first, by compare-and-swap as ``BatchManager.cancel_batch``
    sets it: whoever feeds the batch checks it before starting a job, so a job
    with no record yet never starts. The records are read after it: one written
    before the marker is cancelled here, one written after is the feeder's.
    """
    definition = _mark_batch_cancelled(args.batch, location, args.batch_dir)
    report = store.scan_report()
    _warn_invalid(report)
    members = [j for j in report.jobs.values() if j.batch_id == args.batch]
    if not members and definition is None:
        raise CliError(
            f"no batch {args.batch!r} in {store.label!r} (no job names it)", EXIT_ATTENTION
        )
    ids = sorted(j.id for j in members if not j.is_finished)
    cancelled = request_cancels(store, ids)
    for job_id in cancelled:
        print(f"cancel requested: {job_id}", file=out)
    batch = printable(args.batch)
    print(f"{len(cancelled)} job(s) of batch {batch} asked to stop", file=out)
    unrecorded = 0
    if definition is not None and definition.cancelled_at and definition.final is None:
        unrecorded = sum(job_id not in report.jobs for job_id in definition.job_ids)
    if unrecorded:
        print(f"{unrecorded} job(s) of batch {batch} not recorded yet will not start", file=out)
    return EXIT_OK if cancelled or unrecorded else EXIT_ATTENTION


def _cancel_unrecorded(store: StatusStore, location: Path | str, args: argparse.Namespace) -> bool:
    """A started batch's job with no record yet (it waits in its owner's memory)."""
    where = _batch_location(location, args.batch_dir)
    try:
        return cancel_unrecorded_at(store, where, args.job_id)
    except (ValueError, OSError, StatusBridgeError) as exc:  # a bad location, a shelf away
        raise CliError(f"cannot read the batch definitions in {where!r}: {exc}") from None


def _batch_location(location: Path | str, batch_dir: str | None) -> str | Path:
    return batch_dir or (location if isinstance(location, str) else DEFAULT_BATCH_DIR)


def _mark_batch_cancelled(
    batch_id: str, location: Path | str, batch_dir: str | None
) -> BatchDefinition | None:
    """Set a started batch's cancel marker; its definition as stored now, None if none."""
    where = _batch_location(location, batch_dir)
    if batch_dir is not None and not is_url(where) and not Path(where).is_dir():
        raise CliError(f"batch folder {where!r} does not exist")
    try:
        definition = mark_batch_cancelled(batch_id, where, utc_now())
    except (ValueError, OSError, StatusBridgeError) as exc:  # a bad location, a shelf away
        raise CliError(f"cannot mark batch {batch_id!r} cancelled in {where!r}: {exc}") from None
    if definition is not None and definition.started_at is None:
        print(f"statusbridge: batch {printable(batch_id)} was never started", file=sys.stderr)
    return definition


def cleanup(store: StatusStore, args: argparse.Namespace, out: TextIO) -> int:
    if args.older_than is None and args.keep is None:
        raise CliError("give --older-than AGE and/or --keep N")
    removed = store.cleanup_ids(args.older_than, args.keep, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for job_id in removed:
        print(f"{verb} {job_id}", file=out)
    done = "would be removed" if args.dry_run else "removed"
    print(f"{len(removed)} finished record(s) {done}", file=out)
    return EXIT_OK
