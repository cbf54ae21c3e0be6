r"""The ``statusbridge`` command: look at and manage a status folder from a terminal.

Exit codes: 0 success; 1 not found (a job, or a batch with no job), nothing
left to cancel, a record that cannot be read or decoded (``show``), or
``doctor`` found something that needs attention; 2 bad usage, or the folder is
missing or unusable; 130 interrupted; 141 the reader of a pipe went away before
the output was written, quietly, as ``cat`` does. So ``statusbridge ls | head -1``
exits 141 when the output is more than the pipe holds (64 KiB on Linux); a shorter
one usually exits 0 (all of it was in the pipe before ``head`` left), or 141 if
``head`` left before the last write. Errors are one line on
stderr, never a traceback. A record file that cannot be read or decoded is that
record's problem: ``ls`` and ``cancel --batch`` name it with the reason in a
warning line on stderr and go on (exit 0), ``watch`` shows it under the table.

Text that comes from status files or their names is shown with control
characters and bidi overrides escaped (``\x1b``, ``\u202e``), so a record cannot
drive the terminal; ``--json`` and ``show`` print exact JSON (those characters
as ``\uXXXX`` escapes, which decode to the very strings stored).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NoReturn, TextIO

from statusbridge.cache import StatusCache
from statusbridge.cache._snapshot import summarize
from statusbridge.cli import _metrics, _serve
from statusbridge.cli._doctor import diagnose
from statusbridge.cli._render import invalid_lines, job_table, json_text, printable, summary_line
from statusbridge.errors import InvalidRecordError, StatusBridgeError
from statusbridge.jobs import request_cancel
from statusbridge.jobs._cancel import request_cancels
from statusbridge.jobs._definition import BatchDefinition
from statusbridge.jobs._definitions import mark_batch_cancelled
from statusbridge.record import BatchJob, BatchStatus
from statusbridge.record._codec import job_to_dict
from statusbridge.record._model import utc_now
from statusbridge.store import ScanReport, StatusStore
from statusbridge.store._files import classify_name, unreadable_reason
from statusbridge.store._location import is_url, location_text, parse_location

__all__ = ["main", "main_entry"]

EXIT_OK, EXIT_ATTENTION, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_PIPE = 0, 1, 2, 130, 141

# Where BatchManager keeps batch definitions when its status location is a folder.
_DEFAULT_BATCH_DIR = "batches"
ENV_DIR = "STATUSBRIDGE_DIR"


class CliError(Exception):
    """A problem to report as one line, with an exit code."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise CliError(f"{message} (see '{self.prog} --help')")


def parse_duration(text: str) -> float:
    """Hours from '90s', '30m', '24h', '7d' or a plain number of hours.

    >>> parse_duration("30m"), parse_duration("2d"), parse_duration("1.5")
    (0.5, 48.0, 1.5)
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r} (try 90s, 30m, 24h or 7d)")
    value, unit = float(match.group(1)), match.group(2) or "h"
    return value * {"s": 1 / 3600, "m": 1 / 60, "h": 1.0, "d": 24.0}[unit]


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more, got {value}")
    return value


def _add_status_filter(parser: argparse.ArgumentParser) -> None:
    """``--status S`` (repeatable), the same name in every subcommand; ``--state`` an alias."""
    parser.add_argument(
        "--status",
        "--state",
        dest="status",
        action="append",
        choices=[s.value for s in BatchStatus],
        metavar="STATUS",
        help=f"only jobs with this status: {', '.join(s.value for s in BatchStatus)} "
        "(repeatable; --state is the same option)",
    )


def build_parser() -> argparse.ArgumentParser:
    default_dir = os.environ.get(ENV_DIR, "batch_status")
    parser = _Parser(
        prog="statusbridge",
        description="Look at and manage a statusbridge status folder.",
        epilog="Exit codes: 0 ok, 1 not found / needs attention, 2 usage or folder error, "
        "130 interrupted, 141 the pipe's reader left before the output was written.",
    )
    parser.add_argument(
        "--dir",
        default=default_dir,
        help=f"status folder, or a sqlite:// or redis:// URL (default: ${ENV_DIR} or batch_status)",
    )
    common = _Parser(add_help=False)
    common.add_argument(
        "--dir", default=argparse.SUPPRESS, help="status folder, or a sqlite:// or redis:// URL"
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    ls = sub.add_parser("ls", parents=[common], help="list jobs")
    _add_status_filter(ls)
    ls.add_argument("--batch", help="only jobs of this batch")
    ls.add_argument("--json", action="store_true", help="machine-readable output")

    show = sub.add_parser("show", parents=[common], help="one job as JSON")
    show.add_argument("job_id")

    watch = sub.add_parser(
        "watch",
        parents=[common],
        help="live view, redrawn in place on every change (plain frames when not a terminal)",
    )
    watch.add_argument("--batch", help="only jobs of this batch")
    _add_status_filter(watch)
    watch.add_argument(
        "--until-done", action="store_true", help="exit once no job is pending or running"
    )
    watch.add_argument("--once", action="store_true", help="draw once and exit")
    watch.add_argument(
        "--interval",
        type=float,
        default=1.0,
        help="redraw at least this often, in seconds, to update ages",
    )

    cancel = sub.add_parser("cancel", parents=[common], help="cancel a job or a batch")
    target = cancel.add_mutually_exclusive_group(required=True)
    target.add_argument("job_id", nargs="?")
    target.add_argument("--batch", help="cancel every unfinished job of this batch")
    cancel.add_argument(
        "--batch-dir",
        default=None,
        metavar="LOCATION",
        help="where the batch definitions live, as BatchManager's batch_dir (default: the "
        f"--dir URL, or the folder {_DEFAULT_BATCH_DIR!r} if it exists); with --batch, its "
        "jobs not recorded yet are then never started either",
    )

    cleanup = sub.add_parser("cleanup", parents=[common], help="remove old finished records")
    cleanup.add_argument(
        "--older-than",
        type=parse_duration,
        default=None,
        metavar="AGE",
        help="remove finished records older than this (90s, 30m, 24h, 7d)",
    )
    cleanup.add_argument(
        "--keep",
        type=_non_negative,
        default=None,
        metavar="N",
        help="keep at most N finished records (newest)",
    )
    cleanup.add_argument("--dry-run", action="store_true", help="only print what would go")

    sub.add_parser("doctor", parents=[common], help="check the folder and this machine")

    simulate = sub.add_parser(
        "simulate", parents=[common], help="write simulated jobs from this process (demo)"
    )
    simulate.add_argument("--jobs", type=int, default=10, help="how many jobs (1..10000)")
    simulate.add_argument("--duration", type=float, default=5.0, help="seconds in all")
    simulate.add_argument("--fail-rate", type=float, default=0.1, help="share that fail, 0..1")
    simulate.add_argument("--seed", type=int, default=None, help="random seed")

    gui = sub.add_parser(
        "gui", parents=[common], help="desktop monitor window (needs PySide6, a display)"
    )
    gui.add_argument("--batch", help="show this batch first")
    gui.add_argument(
        "--exit-after", type=float, default=None, metavar="SECONDS", help="close after SECONDS"
    )
    _metrics.add_arguments(sub.add_parser("metrics", parents=[common], help=_metrics.HELP))
    _serve.add_arguments(sub.add_parser("serve", parents=[common], help=_serve.HELP))
    from statusbridge.cli import _copy  # (here, not at the top: no store code at import)

    _copy.add_arguments(sub.add_parser("copy", help=_copy.HELP))
    return parser


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    try:
        return _run(_parse(argv), out)
    except CliError as exc:
        print(f"statusbridge: error: {printable(str(exc))}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _detach(out)
        return EXIT_PIPE
    except (StatusBridgeError, OSError, ValueError) as exc:
        print(f"statusbridge: error: {printable(str(exc))}", file=sys.stderr)
        return EXIT_ATTENTION if isinstance(exc, InvalidRecordError) else EXIT_USAGE
    except ModuleNotFoundError as exc:
        if exc.name != "redis":  # only the URL's missing extra is usage; others are bugs
            raise
        print(f"statusbridge: error: {printable(str(exc))}", file=sys.stderr)
        return EXIT_USAGE


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """The arguments; an unknown one is reported with the help of the subcommand it was given to.

    (argparse leaves unknown arguments to the top-level parser, whose message pointed at
    'statusbridge --help', where no subcommand option is listed.)
    """
    args, unknown = build_parser().parse_known_args(argv)
    if unknown:
        where = f"statusbridge {args.command}" if getattr(args, "command", None) else "statusbridge"
        raise CliError(f"unrecognized arguments: {' '.join(unknown)} (see '{where} --help')")
    return args


def _detach(out: TextIO) -> None:
    """Point ``out`` at /dev/null, so the interpreter's final flush cannot fail again."""
    try:
        fd = out.fileno()
    except (OSError, ValueError):  # not backed by a descriptor (a StringIO): nothing to flush
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def _folder(args: argparse.Namespace, *, must_exist: bool = True) -> Path | str:
    """The status location of ``--dir``: a folder (checked) or a server URL (parsed)."""
    if is_url(args.dir):
        try:
            parse_location(args.dir)
        except ValueError as exc:
            raise CliError(str(exc)) from None
        return str(args.dir)
    folder = Path(args.dir)
    if must_exist and not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise CliError(f"status folder {str(folder)!r} {what} (set --dir or ${ENV_DIR})")
    return folder


def _shown(location: Path | str) -> str:
    """A location for the screen: a folder as given, a URL without its password."""
    return str(location) if isinstance(location, Path) else location_text(location)


def _run(args: argparse.Namespace, out: TextIO) -> int:
    if args.command == "doctor":
        return _doctor(_folder(args, must_exist=False), out)
    if args.command == "simulate":
        return _simulate(args, out)
    if args.command == "gui":
        return _open_gui(args, out)
    if args.command == "metrics":
        return _serve_metrics(args, out)
    if args.command == "serve":
        return _serve_web(args, out)
    if args.command == "copy":
        from statusbridge.cli import _copy

        return _copy.run(args, out)
    folder = _folder(args)
    store = StatusStore(folder)
    if args.command == "ls":
        return _ls(store, args, out)
    if args.command == "show":
        return _show(store, args.job_id, out)
    if args.command == "watch":
        return _watch(folder, args, out)
    if args.command == "cancel":
        return _cancel(store, folder, args, out)
    if args.command == "cleanup":
        return _cleanup(store, args, out)
    raise CliError(f"unknown command {args.command!r}")  # pragma: no cover - argparse checks


def _warn_invalid(report: ScanReport) -> None:
    for name, reason in sorted(report.invalid_records().items()):
        print(f"statusbridge: warning: {printable(name)}: {printable(reason)}", file=sys.stderr)


def _ls(store: StatusStore, args: argparse.Namespace, out: TextIO) -> int:
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


def _show(store: StatusStore, job_id: str, out: TextIO) -> int:
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


def _watch(folder: Path | str, args: argparse.Namespace, out: TextIO) -> int:
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


def _cancel(store: StatusStore, location: Path | str, args: argparse.Namespace, out: TextIO) -> int:
    if args.batch:
        return _cancel_batch(store, location, args, out)
    if request_cancel(store, args.job_id):
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


def _mark_batch_cancelled(
    batch_id: str, location: Path | str, batch_dir: str | None
) -> BatchDefinition | None:
    """Set a started batch's cancel marker; its definition as stored now, None if none."""
    where = batch_dir or (location if isinstance(location, str) else _DEFAULT_BATCH_DIR)
    if batch_dir is not None and not is_url(where) and not Path(where).is_dir():
        raise CliError(f"batch folder {where!r} does not exist")
    try:
        definition = mark_batch_cancelled(batch_id, where, utc_now())
    except (ValueError, OSError, StatusBridgeError) as exc:  # a bad location, a shelf away
        raise CliError(f"cannot mark batch {batch_id!r} cancelled in {where!r}: {exc}") from None
    if definition is not None and definition.started_at is None:
        print(f"statusbridge: batch {printable(batch_id)} was never started", file=sys.stderr)
    return definition


def _cleanup(store: StatusStore, args: argparse.Namespace, out: TextIO) -> int:
    if args.older_than is None and args.keep is None:
        raise CliError("give --older-than AGE and/or --keep N")
    removed = store.cleanup_ids(args.older_than, args.keep, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for job_id in removed:
        print(f"{verb} {job_id}", file=out)
    done = "would be removed" if args.dry_run else "removed"
    print(f"{len(removed)} finished record(s) {done}", file=out)
    return EXIT_OK


def _simulate(args: argparse.Namespace, out: TextIO) -> int:
    from statusbridge.demo import run_external

    if not 1 <= args.jobs <= 10_000:
        raise CliError("--jobs must be between 1 and 10000")
    if not 0.0 <= args.fail_rate <= 1.0:
        raise CliError("--fail-rate must be between 0 and 1")
    if args.duration <= 0:
        raise CliError("--duration must be positive")
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")
    print(
        f"writing {args.jobs} simulated jobs to {printable(args.dir)} for {args.duration:g}s ...",
        file=out,
        flush=True,
    )
    batch_id = run_external(args.dir, args.jobs, args.duration, args.fail_rate, seed)
    print(f"done: batch {batch_id}", file=out)
    return EXIT_OK


def _open_gui(args: argparse.Namespace, out: TextIO) -> int:
    from statusbridge.cli import _gui as gui  # imports PySide6 only when the window opens

    location = str(_folder(args))
    problem = gui.unavailable()
    if problem:
        raise CliError(problem)
    return gui.run(location, args.batch, args.exit_after, out)


def _check_server_args(problem: str | None, port: int) -> None:
    """Refuse a server command whose extra is missing (``problem``) or whose port is bad."""
    if problem:
        raise CliError(problem)
    if not 0 <= port <= 65535:
        raise CliError(f"--port must be between 0 and 65535, got {port}")


def _serve_metrics(args: argparse.Namespace, out: TextIO) -> int:
    _check_server_args(_metrics.unavailable(), args.port)
    if not 0 <= args.batches <= _metrics.MAX_BATCHES:
        raise CliError(
            f"--batches must be between 0 and {_metrics.MAX_BATCHES}, got {args.batches}"
        )
    location = str(_folder(args))
    return _metrics.serve(
        location, args.host, args.port, out, batches=args.batches, buckets=args.buckets
    )


def _serve_web(args: argparse.Namespace, out: TextIO) -> int:
    _check_server_args(_serve.unavailable(), args.port)
    if args.root_path and (not args.root_path.startswith("/") or args.root_path.endswith("/")):
        raise CliError(
            f"--root-path must start with / and not end with one, got {args.root_path!r}"
        )
    token = _serve.read_token(args.token_file)
    if token is None and not _serve.is_loopback(args.host):
        raise CliError(
            f"refusing to serve on {args.host} without a token: give --token-file FILE or set "
            f"${_serve.ENV_TOKEN} (or bind to 127.0.0.1)"
        )
    location = str(_folder(args))
    return _serve.serve(
        location,
        args.host,
        args.port,
        out,
        token=token,
        root_path=args.root_path,
        hosts=_serve.allowed_hosts(args.host, args.allowed_host),
        origins=tuple(args.allow_origin),
        batch_dir=args.batch_dir
        or (
            None
            if is_url(location) or not Path(_DEFAULT_BATCH_DIR).is_dir()
            else _DEFAULT_BATCH_DIR
        ),
    )


def _doctor(folder: Path | str, out: TextIO) -> int:
    findings = diagnose(folder)
    for finding in findings:
        print(f"[{'ok' if finding.ok else '!!'}] {printable(finding.title)}", file=out)
        for line in finding.details:
            print(f"     {printable(line)}", file=out)
    bad = sum(1 for f in findings if not f.ok)
    print("all good" if not bad else f"{bad} problem(s) need attention", file=out)
    return EXIT_OK if not bad else EXIT_ATTENTION


def main_entry() -> NoReturn:
    """Console-script entry point."""
    code = main()
    try:
        sys.stdout.flush()  # here, not at exit, where a closed pipe prints a traceback
    except BrokenPipeError:
        _detach(sys.stdout)
        code = EXIT_PIPE
    sys.exit(code)
