"""Prometheus metrics over a ``StatusCache``, read at scrape time.

The collector reads the cache's snapshot and health when Prometheus scrapes,
so there is nothing to keep in step across processes: no per-process
registry, no multiprocess mode, and any process that can open the status
location can serve the numbers (``statusbridge metrics``). Only the
transition counters and the duration histogram are kept here, updated from the
cache's change feed (cost per change, not per job), and they count from the
moment the collector starts. Job ids never become labels; an opt-in ``batch``
label is capped at ``max_batches`` values.

Needs the ``metrics`` extra: ``pip install -e '.[metrics]'`` in the clone.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import REGISTRY, Collector, CollectorRegistry

from statusbridge.cache import CacheHealth, Snapshot, StatusCache
from statusbridge.cache._transitions import TransitionTracker
from statusbridge.record import BatchJob, BatchStatus

__all__ = ["DEFAULT_BUCKETS", "OTHER_BATCHES", "StatusCollector", "register"]

DEFAULT_BUCKETS: tuple[float, ...] = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600)
"""Job durations, in seconds: from quick jobs to a few hours."""

OTHER_BATCHES = "_other"
"""The ``batch`` label value for jobs outside the batches shown (and jobs in no batch)."""

_STATUSES = tuple(BatchStatus)


class StatusCollector(Collector):
    """Series about the jobs and the cache behind ``cache``, for a ``CollectorRegistry``.

    ``buckets``: upper bounds of the duration histogram, in seconds. With
    ``batch_label=True``, ``statusbridge_jobs`` gets a ``batch`` label for at
    most ``max_batches`` batches (unfinished first, then by id, newest first);
    the rest are summed under ``batch="_other"``, so ``sum by (status)`` stays
    the total. ``clock`` returns Unix seconds (tests pass their own).
    """

    def __init__(
        self,
        cache: StatusCache,
        *,
        buckets: Sequence[float] = DEFAULT_BUCKETS,
        batch_label: bool = False,
        max_batches: int = 20,
        clock: Callable[[], float] = time.time,
    ) -> None:
        bounds = sorted({float(b) for b in buckets if not math.isinf(b)})
        if not bounds or bounds[0] < 0:
            raise ValueError(f"buckets must hold at least one bound >= 0, got {list(buckets)}")
        if max_batches < 1:
            raise ValueError(f"max_batches must be at least 1, got {max_batches}")
        self._cache = cache
        self._bounds = bounds
        self._batch_label = batch_label
        self._max_batches = max_batches
        self._clock = clock
        self._lock = threading.Lock()
        self._transitions = dict.fromkeys(_STATUSES, 0)
        self._bucket_counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self._duration_sum = 0.0
        self._last_change = clock()
        self._stop_feed = cache.subscribe(self._changed)
        self._tracker = TransitionTracker(cache, on_transition=self._entered)

    def close(self) -> None:
        """Stop following the cache (the registry may still scrape the last values)."""
        self._tracker.close()
        self._stop_feed()

    def _changed(self, snap: Snapshot, changed: frozenset[str]) -> None:
        now = self._clock()
        with self._lock:
            self._last_change = now

    def _entered(self, job: BatchJob, previous: BatchStatus | None) -> None:
        with self._lock:
            self._transitions[job.status] += 1
            if job.is_finished and job.started_at is not None and job.completed_at is not None:
                seconds = max(0.0, (job.completed_at - job.started_at).total_seconds())
                self._bucket_counts[bisect.bisect_left(self._bounds, seconds)] += 1
                self._duration_sum += seconds

    def describe(self) -> Iterator[Metric]:
        # Names only: the registry need not run a scrape to learn them.
        yield from self._families(Snapshot(), None)

    def collect(self) -> Iterator[Metric]:
        yield from self._families(self._cache.snapshot(), self._cache.health())

    def _families(self, snap: Snapshot, health: CacheHealth | None) -> Iterator[Metric]:
        jobs = GaugeMetricFamily(
            "statusbridge_jobs",
            "Jobs in each status now.",
            labels=["status", "batch"] if self._batch_label else ["status"],
        )
        for labels, counts in self._job_counts(snap):
            for status in _STATUSES:
                jobs.add_metric([status.value, *labels], counts[status])
        yield jobs
        with self._lock:
            transitions = dict(self._transitions)
            cumulative, total = [], 0
            for count in self._bucket_counts:
                total += count
                cumulative.append(total)
            duration_sum = self._duration_sum
            last_change = self._last_change
        entered = CounterMetricFamily(
            "statusbridge_job_transitions",
            "Jobs seen entering each status since the collector started.",
            labels=["status"],
        )
        for status in _STATUSES:
            entered.add_metric([status.value], transitions[status])
        yield entered
        les = [repr(b) for b in self._bounds] + ["+Inf"]
        yield HistogramMetricFamily(
            "statusbridge_job_duration_seconds",
            "Started to finished, of jobs seen finishing since the collector started.",
            buckets=list(zip(les, cumulative, strict=True)),
            sum_value=duration_sum,
        )
        yield GaugeMetricFamily(
            "statusbridge_cache_invalid_records",
            "Records (or files) the cache refused, each with a reason in health().",
            value=len(health.invalid_files) if health else 0,
        )
        yield CounterMetricFamily(
            "statusbridge_cache_rescans",
            "Full reconciles of the cache with its status location.",
            value=health.rescans if health else 0,
        )
        yield GaugeMetricFamily(
            "statusbridge_cache_up",
            "1 while the cache runs and reaches its location (the folder exists, the server"
            " answers), else 0: an outage shows here, not only as a growing change age.",
            value=1 if health and health.running and health.directory_present else 0,
        )
        yield GaugeMetricFamily(
            "statusbridge_cache_last_change_age_seconds",
            "Seconds since the snapshot last changed (since the collector started, if not since).",
            value=max(0.0, self._clock() - last_change),
        )

    def _job_counts(self, snap: Snapshot) -> Iterator[tuple[list[str], Mapping[BatchStatus, int]]]:
        everything = snap.summary().counts
        if not self._batch_label:
            yield [], everything
            return
        shown = _pick_batches(snap, self._max_batches)
        rest = dict(everything)
        for batch_id in shown:
            counts = snap.summary(batch_id).counts
            for status in _STATUSES:
                rest[status] -= counts[status]
            yield [batch_id], counts
        yield [OTHER_BATCHES], rest


def _pick_batches(snap: Snapshot, limit: int) -> list[str]:
    """At most ``limit`` batch ids: unfinished batches first, then by id, newest first."""
    ids = sorted(snap.batch_ids(), reverse=True)
    ids.sort(key=lambda b: snap.summary(b).is_done)  # stable: keeps the id order within
    return ids[:limit]


def register(
    cache: StatusCache,
    registry: CollectorRegistry = REGISTRY,
    *,
    buckets: Sequence[float] = DEFAULT_BUCKETS,
    batch_label: bool = False,
    max_batches: int = 20,
) -> StatusCollector:
    """Register a ``StatusCollector`` over ``cache`` (options as for the class) and return it.

    The default registry is the one ``prometheus_client`` serves, next to your own series.
    One per registry: the series names are fixed, so a second location needs its own
    registry (or its own ``statusbridge metrics`` process).
    """
    collector = StatusCollector(
        cache, buckets=buckets, batch_label=batch_label, max_batches=max_batches
    )
    try:
        registry.register(collector)
    except BaseException:
        collector.close()  # refused (a second registration): stop following the cache
        raise
    return collector
