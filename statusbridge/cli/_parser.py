"""The command line of ``statusbridge``: its parser, exit codes and the one error type."""

from __future__ import annotations

import argparse
import os
import re
from typing import NoReturn

from statusbridge.cli import _metrics, _serve
from statusbridge.record import BatchStatus

__all__ = [
    "DEFAULT_BATCH_DIR",
    "ENV_DIR",
    "EXIT_ATTENTION",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_PIPE",
    "EXIT_USAGE",
    "CliError",
    "build_parser",
    "parse_duration",
]

EXIT_OK, EXIT_ATTENTION, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_PIPE = 0, 1, 2, 130, 141

# Where BatchManager keeps batch definitions when its status location is a folder.
DEFAULT_BATCH_DIR = "batches"
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
        f"--dir URL, or the folder {DEFAULT_BATCH_DIR!r} if it exists); with --batch, its "
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
