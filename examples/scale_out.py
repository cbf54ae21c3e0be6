"""Jobs on Dask workers report through Redis; any UI on the same URL shows them live.

Run: python examples/scale_out.py [SCHEDULER]   (default: a LocalCluster of 2 processes)
The status location comes from $STATUSBRIDGE_DIR (default redis://127.0.0.1:6379/0?prefix=demo).
"""

import os
import sys
import time

from dask.distributed import Client, LocalCluster

from statusbridge import BatchQueue, report_progress

URL = os.environ.get("STATUSBRIDGE_DIR", "redis://127.0.0.1:6379/0?prefix=demo")


def render(params: dict[str, int]) -> str:
    """Runs on a Dask worker, maybe on another host: progress goes through the URL."""
    for step in range(1, 6):
        time.sleep(params["seconds"] / 5)  # the work
        report_progress(step / 5, f"frame {params['frame']}: step {step}/5")
    return f"frame {params['frame']} done"


if __name__ == "__main__":
    if len(sys.argv) > 1:
        client = Client(sys.argv[1])  # e.g. tcp://127.0.0.1:8786
    else:
        client = Client(LocalCluster(n_workers=2, processes=True, dashboard_address=":0"))
    with client, BatchQueue(status_dir=URL, executor=client.get_executor(pure=False)) as queue:
        ids = [
            queue.submit(render, {"frame": n, "seconds": 1}, batch_id="frames") for n in range(4)
        ]
        queue.wait(ids)
        for job_id in ids:
            job = queue.get_job_status(job_id)
            assert job is not None
            print(f"{job.status:>9} {job.result}")
