"""RedisCache, the Redis/Valkey backend of StatusCache: initial load, then the change stream.

The load (every record, the stream's last id and the feed counter) is one Lua
call, so following the stream from that id misses nothing. Each feed entry
carries a number ``n`` one above the previous one; a cache that sees the number
jump (the stream was trimmed past its position) or go back (the server was
restarted empty) loads everything again, and jobs that are gone leave the
snapshot. A lost connection is retried with backoff (shown in ``health()``) and
followed by a full load, as is a periodic reconcile.

Ownership: the thread's life is the shared core's (``_cache``): the two clients
are its resources, so a cache dropped without ``close()`` is collected and its
thread closes them and ends.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import redis

from statusbridge.cache._cache import StatusCache
from statusbridge.cache._health import CacheHealth
from statusbridge.cache._snapshot import Snapshot
from statusbridge.cache._written import remember_written
from statusbridge.errors import BackendRefused, BackendUnavailable
from statusbridge.record import BatchJob
from statusbridge.record._ranges import POSITIVE
from statusbridge.store._location import RedisLocation, parse_location
from statusbridge.store.redis._schema import (
    READ_SCRIPT,
    Keys,
    connect,
    decode_doc,
    translated,
)
from statusbridge.store.redis._store import RedisStore

__all__ = ["RedisCache"]

logger = logging.getLogger(__name__)

_BLOCK_MS = 500  # one blocking read; also how long close() may wait for the thread
_READ_COUNT = 1000
_MAX_BACKOFF = 2.0
_VANISHED_SHOWN = 20  # how many vanished ids health() names
_WRITTEN_MAX = 100_000  # own writes remembered until their feed entries come


def _decoded(job_id: str, doc: object) -> BatchJob:
    """A record read from the server (decoded), or one this process wrote (as it is)."""
    if isinstance(doc, BatchJob):
        return doc
    assert isinstance(doc, bytes), type(doc)
    return decode_doc(job_id, doc)


class RedisCache(StatusCache):
    """Follow the jobs under one prefix of a Redis/Valkey server.

    Open it as ``StatusCache("redis://host:6379/0?prefix=app")``. The first load
    happens here: an unreachable server raises ``BackendUnavailable`` within 10 s.
    The folder's ``polling``, ``poll_interval`` and ``max_bytes`` are refused (TypeError).
    """

    _absorbs_writes = True

    def __init__(
        self,
        directory: str | os.PathLike[str] | RedisLocation = "batch_status",
        *,
        reconcile_interval: float = 30.0,
    ) -> None:
        POSITIVE.check("reconcile_interval", reconcile_interval)
        where = parse_location(directory)
        if not isinstance(where, RedisLocation):
            raise TypeError(f"not a redis:// location: {directory!r}")
        self._init_core()
        self.where = where
        self.reconcile_interval = reconcile_interval
        self._keys = Keys(where)
        self._store = RedisStore(where)
        # Blocking reads: a socket timeout well above the block time, so a silent server is noticed.
        # No silent retry: every lost connection must lead to a full load (the server may
        # have restarted empty meanwhile).
        self._reader = connect(where, timeout=_BLOCK_MS / 1000 + 5, retries=0)
        self._read = self._reader.register_script(READ_SCRIPT)
        self._life.hold("reader", self._reader)
        self._life.hold("store", self._store)
        self._counter = 0
        self._last_id = "0-0"
        self._connected = False
        self._reconnects = 0
        self._reloads = 0
        self._disconnected_since: datetime | None = None
        self._need_reload = False
        self._backoff = 0.05
        self._eviction_note: str | None = None
        self._vanished_count = 0
        self._vanished_ids: tuple[str, ...] = ()
        self._vanished_now: set[str] = set()  # noticed and still gone: counted once
        # This process's own writes (``absorb``): job id -> (its feed entry's number, record).
        self._written: dict[str, tuple[int, BatchJob]] = {}
        self._next_reconcile = time.monotonic() + reconcile_interval
        try:
            self._reload(count=False)
        except BaseException:
            self._close_clients()
            raise
        self._start_thread(f"statusbridge-cache:{where}")

    @property
    def directory(self) -> str:
        """The location, for people (the URL without its password)."""
        return str(self.where)

    def __repr__(self) -> str:
        return f"<StatusCache {str(self.where)!r} version={self._snapshot.version}>"

    def health(self) -> CacheHealth:
        note = None
        since = self._disconnected_since  # read once: the cache thread clears it on reconnect
        if not self._connected and since is not None:
            note = f"disconnected since {since:%H:%M:%S} UTC; reconnecting"
        elif self._eviction_note is not None:
            note = self._eviction_note
        return CacheHealth(
            running=not self._closed and self._thread.is_alive(),
            backend="redis",
            version=self._snapshot.version,
            jobs=len(self._snapshot),
            events=self._events,
            rescans=self._rescans,
            last_event_at=self._last_event_at,
            invalid_files=self._invalid_view,
            directory=str(self.where),
            directory_present=self._connected,
            observer_restarts=self._reconnects,
            last_error=self._last_error,
            backend_note=note,
            clock_skew=self._skew_note,
            vanished_records=self._vanished_count,
            vanished_ids=self._vanished_ids,
        )

    def _rescan_here(self) -> Snapshot:
        self._reload()
        return self._snapshot

    def _release(self) -> None:
        # Not forgotten: a rescan of a closed cache reconnects them, then closes them again.
        self._close_clients()

    def _close_clients(self) -> None:
        for client in (self._reader, self._store):
            try:
                client.close()
            except Exception:
                logger.debug("closing a redis client failed", exc_info=True)

    # -- the cache thread -----------------------------------------------------------
    def _advance(self, *, full: bool) -> None:
        """One round: reload if needed, else one blocking read."""
        if full or self._need_reload or time.monotonic() >= self._next_reconcile:
            self._reload()
        else:
            self._follow()

    def _failed(self, exc: Exception) -> float:
        if isinstance(exc, (redis.ConnectionError, redis.TimeoutError, BackendUnavailable)):
            return self._lost(exc)
        if isinstance(exc, BackendRefused):
            return self._refused(exc)
        # The loop must survive anything; a full load repairs the state.
        super()._failed(exc)
        self._need_reload = True
        return 0.05

    def _lost(self, exc: BaseException) -> float:
        if self._connected:
            self._disconnected_since = datetime.now(UTC)
            logger.warning("statusbridge: lost %s (%s); reconnecting", self.where, exc)
        self._connected = False
        self._reconnects += 1
        self._last_error = f"{type(exc).__name__}: {exc}"
        self._need_reload = True
        pause, self._backoff = self._backoff, min(self._backoff * 2, _MAX_BACKOFF)
        return pause

    def _check_counter(self) -> None:
        """Idle: compare the feed's counter with what was read; a gap means a reload.

        A cache that stalled (a process stopped, a machine asleep) while the feed was
        trimmed past its position reads nothing new after it wakes, since nothing is left
        to read: only the counter shows what it missed. A counter behind ours means a
        server restarted empty.
        """
        raw = translated(self.where, lambda: self._reader.get(self._keys.feed_n))
        counter = int(raw) if raw else 0
        if counter > self._counter:
            # A write landed since the read returned (its entry and counter come in one
            # script): if its entry is there, the next read takes it, no reload needed.
            waiting = translated(
                self.where,
                lambda: self._reader.xread({self._keys.feed: self._last_id}, count=1),
            )
            if waiting:
                return
        if counter != self._counter:
            logger.info(
                "statusbridge: %s's feed counter is %d, this cache read up to %d"
                " (trimmed past it while it stalled, or restarted); reloading",
                self.where,
                counter,
                self._counter,
            )
            self._need_reload = True

    def _refused(self, exc: Exception) -> float:
        """The server refuses our commands (an ACL without XREAD, say): say so, back off.

        Not a reason to reload: what we hold is still right, and a reload that succeeds
        (its command allowed) would reset the backoff and loop.
        """
        message = f"{type(exc).__name__}: {exc}"
        if message != self._last_error:
            logger.error(
                "statusbridge: %s refuses the cache's commands (%s); trying again with backoff",
                self.where,
                exc,
            )
        self._last_error = message
        pause, self._backoff = self._backoff, min(self._backoff * 2, _MAX_BACKOFF)
        return pause

    def _check_eviction_policy(self) -> None:
        """Warn (once, and in ``health()``) when the server may evict our records.

        Redis's own advice for data that must not be lost is ``noeviction``: under any
        other policy a full server drops keys silently, records included. A user whose ACL
        forbids CONFIG GET cannot be told; nothing is assumed then.
        """
        try:
            reply = self._reader.config_get("maxmemory-policy")
        except redis.RedisError:
            return
        values: dict[Any, Any] = dict(reply)  # bytes keys from our client
        policy = values.get(b"maxmemory-policy", values.get("maxmemory-policy"))
        if isinstance(policy, bytes):
            policy = policy.decode()
        if not policy or policy == "noeviction":
            self._eviction_note = None
            return
        note = (
            f"maxmemory-policy is {policy}: a full server may evict job records without a"
            " trace; set it to noeviction for data that must not be lost"
        )
        if note != self._eviction_note:
            logger.warning("statusbridge: %s: %s", self.where, note)
        self._eviction_note = note

    def _reload(self, *, count: bool = True) -> None:
        self._check_eviction_policy()
        counter, last_id, records, vanished = self._store.load()
        self._vanished_now &= set(vanished)  # deleted or written again since: forgotten
        self._note_vanished(vanished)
        if count:
            self._rescans += 1
        self._connected = True
        self._disconnected_since = None
        self._backoff = 0.05
        self._need_reload = False
        self._next_reconcile = time.monotonic() + self.reconcile_interval
        self._counter, self._last_id = counter, last_id
        self._written.clear()  # the load has them; a restarted server reuses the numbers
        self._apply_load(records)

    def _follow(self) -> None:
        reply: Any = translated(
            self.where,
            lambda: self._reader.xread(
                {self._keys.feed: self._last_id}, count=_READ_COUNT, block=_BLOCK_MS
            ),
        )
        if not reply:
            self._check_counter()
            return
        # This process's own writes, by their feed entry's number: read nothing for them.
        remember_written(self._written, self._take_absorbed(), int, _WRITTEN_MAX)
        newest: dict[str, int] = {}  # each job's last entry in this read (0: anonymous)
        for _stream, entries in reply:
            for entry_id, fields in entries:
                n = int(fields.get(b"n", b"0"))
                if n == 0:
                    pass  # announced by another program: re-read the job, nothing to count
                elif n != self._counter + 1:
                    logger.info(
                        "statusbridge: feed of %s went from %d to %d (trimmed or restarted); "
                        "reloading", self.where, self._counter, n,
                    )  # fmt: skip
                    self._need_reload = True
                    return
                else:
                    self._counter = n
                self._last_id = entry_id.decode()
                job_id = fields[b"id"].decode()
                newest.pop(job_id, None)  # (re-inserted: the order of last entries)
                newest[job_id] = n
                self._events += 1
        if not newest:
            return
        self._last_event_at = datetime.now(UTC)
        # A job whose last entry is this process's own write is taken as written: no read.
        mine: dict[str, bytes | BatchJob | None] = {}
        for job_id, n in newest.items():
            written = self._written.pop(job_id, None)
            if written is not None and n and written[0] == n:
                mine[job_id] = written[1]
        ids = [job_id for job_id in newest if job_id not in mine]
        with self._reader.pipeline(transaction=False) as pipe:
            for job_id in ids:
                self._read(keys=[self._keys.job(job_id)], client=pipe)
                pipe.sismember(self._keys.ids, job_id)
            replies = pipe.execute() if ids else []
        found: dict[str, bytes | BatchJob | None] = dict(zip(ids, replies[::2], strict=True))
        listed = dict(zip(ids, replies[1::2], strict=True))
        # A delete takes the id out of the set with the hash: gone but listed is evicted.
        self._vanished_now.difference_update(i for i, doc in found.items() if doc is not None)
        self._vanished_now.difference_update(mine)
        self._note_vanished([i for i, doc in found.items() if doc is None and listed[i]])
        self._apply_documents({**found, **mine}, _decoded)

    def _note_vanished(self, job_ids: Iterable[str]) -> None:
        """Count and name records that went without a delete (evicted), once each.

        Their jobs leave the snapshot, as a fresh load would show; the store refuses to
        recreate them from a partial write (``RecordVanished``).
        """
        new = [job_id for job_id in job_ids if job_id not in self._vanished_now]
        if not new:
            return
        self._vanished_now.update(new)
        self._vanished_count += len(new)
        self._vanished_ids = (*self._vanished_ids, *new)[-_VANISHED_SHOWN:]
        logger.warning(
            "statusbridge: %d job record(s) vanished from %s without a delete (evicted?"
            " set maxmemory-policy to noeviction): %s",
            len(new),
            self.where,
            ", ".join(new[:_VANISHED_SHOWN]),
        )
