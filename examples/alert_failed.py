"""Print an alert each time a job fails; swap print() for your chat or mail call.

Usage: python examples/alert_failed.py [STATUS_LOCATION] [--max-alerts N]
"""

import argparse
import queue

from statusbridge import BatchJob, BatchStatus, StatusCache, on_job_finished

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("location", nargs="?", default="batch_status")
parser.add_argument("--max-alerts", type=int, default=None, help="exit after N alerts")
args = parser.parse_args()

alerts: queue.Queue[BatchJob] = queue.Queue()


def finished(job: BatchJob) -> None:
    # Runs on the cache's thread: only hand the job over, send from the main thread.
    if job.status is BatchStatus.FAILED:
        alerts.put(job)


with StatusCache(args.location) as cache:
    stop = on_job_finished(cache, finished)  # failures from before now are not alerted
    print(f"watching {args.location} for failed jobs (Ctrl-C to stop)", flush=True)
    sent = 0
    try:
        while args.max_alerts is None or sent < args.max_alerts:
            job = alerts.get()
            print(f"ALERT: job {job.id} failed: {job.error_message or 'no message'}", flush=True)
            sent += 1
    except KeyboardInterrupt:
        pass
    finally:
        stop()
