"""``statusbridge copy --from LOCATION --to LOCATION``: records and batch definitions."""

from __future__ import annotations

import argparse
from typing import TextIO

from statusbridge.store._copy import copy_location
from statusbridge.store._location import location_text

__all__ = ["HELP", "add_arguments", "run"]

HELP = "copy records and batch definitions between locations (folder, sqlite://, redis://)"


def add_arguments(copy: argparse.ArgumentParser) -> None:
    copy.add_argument("--from", dest="source", required=True, metavar="LOCATION")
    copy.add_argument("--to", dest="target", required=True, metavar="LOCATION")
    copy.add_argument(
        "--batches-from", default=None, metavar="LOCATION",
        help="where the batch definitions are (default: --from when it is a URL)",
    )  # fmt: skip
    copy.add_argument(
        "--batches-to", default=None, metavar="LOCATION",
        help="where they go (default: --to when it is a URL)",
    )  # fmt: skip


def run(args: argparse.Namespace, out: TextIO) -> int:
    report = copy_location(
        args.source, args.target, batches_from=args.batches_from, batches_to=args.batches_to
    )
    print(
        f"copied {report.records} record(s) to {location_text(args.target)} "
        f"({report.records_kept} already there), {report.batches} batch definition(s) "
        f"({report.batches_kept} already there)",
        file=out,
    )
    for name, reason in sorted(report.invalid.items()):
        print(f"skipped {name}: {reason}", file=out)
    return 0
