"""The seed application's usage, unchanged but for the import."""

import time

from statusbridge import BatchManager, JobCancelled, is_cancelled, report_progress


def generator(params: dict) -> dict:
    """One job: a few steps with progress; cooperates with cancellation."""
    for step in range(1, 6):
        if is_cancelled():  # or let report_progress raise it
            raise JobCancelled(f"stopped before step {step}")  # ends CANCELLED
        report_progress(step / 5, f"{params['prompt']}: step {step}/5", step=step)
        time.sleep(params.get("pause", 0.05))
    if params["prompt"] == "bad":
        raise ValueError("cannot generate 'bad'")
    return {"text": params["prompt"].upper()}


if __name__ == "__main__":  # process workers import this module: keep the app under main
    jobs = [{"prompt": p} for p in ("cat", "dog", "bad", "owl")]

    manager = BatchManager()
    batch_id = manager.create_custom_batch(jobs, "Test")
    manager.start_batch(batch_id, generator)
    status = manager.get_batch_status(batch_id)

    while status is not None and not status.is_done:  # a UI would rerender here
        print(status)  # e.g. "Test: running 55% (2 running, 2 completed)": 100% once all completed
        manager.queue.cache.wait_for_change(manager.queue.snapshot().version, timeout=1)
        status = manager.get_batch_status(batch_id)
    print(status)
    for job in manager.get_batch_jobs(batch_id):
        outcome = job.error_message if job.result is None else dict(job.result)
        print(job.id, job.status.value, outcome or "")

    # Cancellation: a second batch, cancelled while it runs (its jobs take 2.5 s each).
    second = manager.create_custom_batch([{"prompt": "slow", "pause": 0.5}] * 4, "Cancelled")
    manager.start_batch(second, generator)
    print("cancelled:", manager.cancel_batch(second))
    manager.shutdown(wait=True)
    print("second batch:", manager.get_batch_status(second).state)
