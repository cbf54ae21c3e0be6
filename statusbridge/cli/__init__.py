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
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn, TextIO

from statusbridge.cli import _metrics, _records, _serve
from statusbridge.cli._doctor import diagnose
from statusbridge.cli._parser import (
    DEFAULT_BATCH_DIR,
    ENV_DIR,
    EXIT_ATTENTION,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PIPE,
    EXIT_USAGE,
    CliError,
    build_parser,
)
from statusbridge.cli._render import printable
from statusbridge.errors import InvalidRecordError, StatusBridgeError
from statusbridge.store import StatusStore
from statusbridge.store._location import is_url, parse_location

__all__ = ["main", "main_entry"]


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
        return _records.ls(store, args, out)
    if args.command == "show":
        return _records.show(store, args.job_id, out)
    if args.command == "watch":
        return _records.watch(folder, args, out)
    if args.command == "cancel":
        return _records.cancel(store, folder, args, out)
    if args.command == "cleanup":
        return _records.cleanup(store, args, out)
    raise CliError(f"unknown command {args.command!r}")  # pragma: no cover - argparse checks


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
            None if is_url(location) or not Path(DEFAULT_BATCH_DIR).is_dir() else DEFAULT_BATCH_DIR
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
