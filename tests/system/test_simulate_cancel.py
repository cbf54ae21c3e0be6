"""The README's "other program" (`statusbridge simulate`) honours cancellation (issue 22, item 10).

Before: "Cancel batch" said "Asked 8 job(s) to stop", the rows said "cancelling", and every
job then ended completed or failed: simulate never looked at its records.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from statusbridge import BatchStatus, StatusStore

from support.processes import child_env, popen
from support.waiting import wait_until


def test_simulate_stops_the_jobs_a_cancel_asks_to_stop(tmp_path: Path) -> None:
    folder = tmp_path / "status"
    folder.mkdir()
    proc = popen(
        [sys.executable, "-m", "statusbridge", "simulate", "--dir", str(folder),
         "--jobs", "4", "--duration", "30", "--fail-rate", "0", "--seed", "1"],
        env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        with StatusStore(folder) as store:

            def running() -> list[str]:
                jobs = store.scan().values()
                return [j.id for j in jobs if j.status is BatchStatus.RUNNING]

            ids = wait_until(lambda: len(running()) == 4 and running(), 60, "4 running jobs")
            batch = store.read(ids[0]).batch_id  # type: ignore[union-attr]
            assert batch is not None
            cancel = subprocess.run(
                [sys.executable, "-m", "statusbridge", "cancel", "--dir", str(folder),
                 "--batch", batch],
                capture_output=True, text=True, timeout=60, check=False, env=child_env(),
            )  # fmt: skip
            assert cancel.returncode == 0, cancel.stderr
            assert "4 job(s) of batch" in cancel.stdout
            out, err = proc.communicate(timeout=30)  # a 30 s run ends at its next step
            assert proc.returncode == 0, err
            assert f"done: batch {batch}" in out
            final = store.scan()
            assert {j.status for j in final.values()} == {BatchStatus.CANCELLED}, final
            assert all("stopped at step" in j.message for j in final.values())
            assert all((j.progress or 0.0) < 1.0 for j in final.values())
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
