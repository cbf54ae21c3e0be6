"""docs/demo.png: the demo at 900 px, one batch in every state (``python -m bench.demo_picture``).

The records are written with ``StatusStore`` as another program would; the demo runs
as the README starts it (tests/support/browser.py), in a throwaway folder.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from statusbridge import StatusStore
from statusbridge.record._model import utc_now

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from support.browser import chromium, demo_server  # noqa: E402
from support.waiting import wait_until  # noqa: E402

BATCH = "nightly-report"
ROWS = [
    ("completed", 1.0, "rendered 40 pages"),
    ("completed", 1.0, "rendered 35 pages"),
    ("running", 0.62, "page 25 of 40"),
    ("running", 0.18, "fetching sources"),
    ("failed", None, None),
    ("cancelled", 0.3, "cancelled by alice"),
    ("pending", None, ""),
    ("pending", None, ""),
]


def write_batch(status: Path) -> None:
    now = utc_now()
    with StatusStore(status) as store:
        for i, (state, progress, message) in enumerate(ROWS):
            fields: dict[str, object] = {"batch_id": BATCH, "params": {"chapter": i}}
            fields["status"] = state
            if state != "pending":
                fields["started_at"] = now - timedelta(seconds=95 - 9 * i)
            if progress is not None:
                fields["progress"] = progress
            if message is not None:
                fields["message"] = message
            if state == "failed":
                fields["error_message"] = "TimeoutError: source server did not answer in 30 s"
            store.update(f"{BATCH}-{i:04d}", **fields)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "demo.png")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sb-demo-picture-") as scratch:
        tmp = Path(scratch)
        write_batch(tmp / "batch_status")
        with (
            # Relative to the server's folder (tmp): the sidebar shows --dir batch_status.
            demo_server(tmp, Path("batch_status")) as (url, _proc, _log),
            chromium(tmp / "profile", 900, 1130) as driver,
        ):
            driver.get(url)
            wait_until(lambda: "rendered 40" in driver.page_source, 60, "the job table")
            time.sleep(2)  # the table's canvas settles: a picture, not a test
            driver.save_screenshot(str(args.out))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
