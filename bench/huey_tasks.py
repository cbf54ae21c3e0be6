"""The Huey peer: a ``SqliteHuey`` whose file is named by ``SB_BENCH_HUEY_DB``.

``huey_consumer bench.huey_tasks.huey -w 4 -k thread`` imports this module,
and so does the benchmark that enqueues the tasks.
"""

from __future__ import annotations

import os

from huey import SqliteHuey

# No fsync per commit, like a StatusStore with durable=False (SQLite's default
# would fsync the WAL on every enqueue and every result).
huey = SqliteHuey(filename=os.environ.get("SB_BENCH_HUEY_DB", "huey-bench.db"), fsync=False)


@huey.task()  # type: ignore[misc]
def trivial(params: object) -> int:
    return 1
