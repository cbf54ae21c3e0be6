"""A worker thread reports progress; the main thread follows it through the cache."""

import threading

from statusbridge import StatusCache, StatusStore

store = StatusStore("batch_status")
store.delete("demo-job")  # start fresh if an earlier run left it


def worker() -> None:
    for step in range(1, 6):
        store.update("demo-job", status="running", progress=step / 5, message=f"step {step}/5")
    store.update("demo-job", status="completed", result={"answer": 42})


with StatusCache("batch_status") as cache:
    threading.Thread(target=worker).start()
    version, job = 0, None
    while job is None or not job.is_finished:
        snapshot = cache.wait_for_change(version, timeout=5)  # wakes on every change
        version, job = snapshot.version, snapshot.get("demo-job")
        if job is not None:
            print(f"{job.status:>9} {job.progress or 0:4.0%} {job.message}")
    print("result:", dict(job.result))
