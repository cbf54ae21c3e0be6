"""How records live on a Redis/Valkey server, shared by ``RedisStore`` and the cache's feed.

Keys (all under the hash tag ``{prefix}``, so one Redis Cluster slot holds them):

- ``{prefix}:job:<id>``  a hash per job: each record field as its JSON text,
  ``meta`` keys as ``m:<key as JSON>`` (so a write merges meta server-side);
- ``{prefix}:ids``       the set of job ids (a full load without SCAN);
- ``{prefix}:feed``      the change stream: ``id``, ``n`` (and ``gone`` for a delete);
- ``{prefix}:feedn``     the number of the last feed entry: a reader that sees
  ``n`` jump (trimmed stream) or go back (server restarted empty) reloads;
- ``{prefix}:batch:<id>`` batch definitions (``BatchManager``), JSON text.

Writes are Lua scripts, so each is atomic on the server and costs one round trip.
Every script that returns a record returns it as the schema-1 JSON document
(built on the server from the hash's JSON texts), so the client decodes it
exactly as it decodes a file, and a reply is one string, not a field list; the
write script skips it when the caller already holds the record (a fingerprint
of the hash says so: see WRITE_SCRIPT).
redis-py is imported only here and in the modules that use it: only a URL location needs it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TypeVar

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from statusbridge.errors import BackendRefused, BackendUnavailable
from statusbridge.record import BatchJob, decode_job
from statusbridge.record._model import FIELD_NAMES
from statusbridge.store._location import RedisLocation

__all__ = [
    "CONNECT_TIMEOUT",
    "DELETE_IF_UNCHANGED",
    "DELETE_SCRIPT",
    "LOAD_SCRIPT",
    "PUT_SCRIPT",
    "WRITE_SCRIPT",
    "Keys",
    "READ_SCRIPT",
    "REPLACE_IF_EQUAL",
    "connect",
    "decode_doc",
    "translated",
]

T = TypeVar("T")

CONNECT_TIMEOUT = 2.0
"""Seconds to open a connection; with the retries below an unreachable server is
reported well within 10 s."""

COMMAND_TIMEOUT = 8.0
"""Seconds one command may wait for its reply. A timeout is not retried (a
frozen server would hold every call once per try), so with the fast retries of
refused or dropped connections a call to a frozen server ends within 10 s."""


def _lua_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


# Each record field's JSON key with its separator, built once: a table lookup costs
# less on the server than cjson.encode per field per call.
_QUOTED = (
    "local QUOTED = {"
    + ", ".join(
        f"[{_lua_string(name)}] = {_lua_string(',' + json.dumps(name) + ':')}"
        for name in FIELD_NAMES
        if name != "meta"
    )
    + "}\n"
)

# The schema-1 document of a job hash given as a Lua table {field = JSON text}.
# Strings are few and joined once (Lua 5.1 interns every string it makes).
_DOC = (
    _QUOTED
    + """
local function doc(fields)
  local parts, n = {'{"schema":1'}, 1
  local meta, m = {}, 0
  for name, value in pairs(fields) do
    local quoted = QUOTED[name]
    if quoted then
      parts[n + 1] = quoted; parts[n + 2] = value; n = n + 2
    elseif string.sub(name, 1, 2) == 'm:' then
      meta[m + 1] = string.sub(name, 3) .. ':' .. value; m = m + 1
    else  -- a field no release writes: quoted properly, ignored by readers
      parts[n + 1] = ',' .. cjson.encode(name) .. ':'; parts[n + 2] = value; n = n + 2
    end
  end
  parts[n + 1] = ',"meta":{' .. table.concat(meta, ',') .. '}}'
  return table.concat(parts)
end
local function table_of(raw)
  local fields = {}
  for k = 1, #raw, 2 do fields[raw[k]] = raw[k + 1] end
  return fields
end
local function hash(key)
  local raw = redis.call('HGETALL', key)
  if #raw == 0 then return nil end
  return table_of(raw)
end
"""
)

# KEYS: job hash, ids set, feed stream, feed counter.
# ARGV: job id, stream max length, what the caller expects the hash to be, then
# field/value pairs (JSON values, meta keys as m:<key>) that make the caller's new record of it.
# Expected: the fingerprint of the record the caller holds (the pairs are its change), '*'
# (the caller WATCHes the key: any record there is the one it read), or 'new' (no record:
# the pairs are a whole new record).
# Returns {fingerprint, n} once written (n: the feed entry's number, by which this
# process's own cache knows the entry of its write); {'stale', fingerprint, document}
# when the hash is not what the caller expects (nothing written: the caller merges its
# change into that record and tries again); {'absent'} when there is no record although
# the caller holds one (nothing written); {'vanished'} when there is no record but the
# job's id is still in the ids set (nothing written): only a delete removes it, so the
# hash went without one, evicted by a server short of memory (or deleted by hand), and a
# partial change must not recreate it without its batch_id and params.
# A fingerprint is the SHA-1 of the hash as HGETALL gives it: equal only if nothing,
# not even a hand edit, changed the hash since the caller read it. Every merge is the
# caller's (``merged``, as on every backend), so numbers stay exactly as Python wrote
# them (Lua would print a seq of 15 digits as 1.2345678901235e+14), and a record the
# caller cannot decode is refused before anything is written.
WRITE_SCRIPT = (
    _DOC
    + """
local function fingerprint(raw) return redis.sha1hex(table.concat(raw, '\\n')) end
local h = KEYS[1]
local raw = redis.call('HGETALL', h)
local expected = ARGV[3]
if #raw == 0 then
  if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then return {'vanished'} end
  if expected ~= 'new' then return {'absent'} end
elseif expected ~= '*' and fingerprint(raw) ~= expected then
  return {'stale', fingerprint(raw), doc(table_of(raw))}
end
redis.call('HSET', h, unpack(ARGV, 4))
redis.call('SADD', KEYS[2], ARGV[1])
local n = redis.call('INCR', KEYS[4])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], '*', 'id', ARGV[1], 'n', n)
return {fingerprint(redis.call('HGETALL', h)), n}
"""
)

# KEYS: job hash, ids set, feed stream, feed counter. ARGV: job id, stream max length.
DELETE_SCRIPT = """
local existed = redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
if existed == 1 then
  local n = redis.call('INCR', KEYS[4])
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], '*', 'id', ARGV[1], 'n', n, 'gone', 1)
end
return existed
"""

# As DELETE_SCRIPT, plus ARGV[3] seq and ARGV[4] created_at (JSON) the record must still have.
DELETE_IF_UNCHANGED = """
local now = redis.call('HMGET', KEYS[1], 'seq', 'created_at')
if now[1] ~= ARGV[3] or now[2] ~= ARGV[4] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
local n = redis.call('INCR', KEYS[4])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], '*', 'id', ARGV[1], 'n', n, 'gone', 1)
return 1
"""

# KEYS: job hash, ids set, feed stream, feed counter. ARGV: job id, stream max length, seq,
# then field/value pairs (JSON values, meta as m:<key>). Replaces the hash with these fields
# unless it holds this seq or a newer one (copying a record as it is); 1 if written.
PUT_SCRIPT = """
local seq = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0') or 0
if seq >= tonumber(ARGV[3]) then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('SADD', KEYS[2], ARGV[1])
local n = redis.call('INCR', KEYS[4])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], '*', 'id', ARGV[1], 'n', n)
return 1
"""

# KEYS: a string key (a batch definition). ARGV: the expected value, the new one.
# Compare-and-swap: 1 if the key held exactly ARGV[1] and now holds ARGV[2]; 0,
# nothing written, if it held anything else or did not exist.
REPLACE_IF_EQUAL = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""

# KEYS: a job hash. Returns its document, or nil.
READ_SCRIPT = (
    _DOC
    + """
local fields = hash(KEYS[1])
if fields == nil then return false end
return doc(fields)
"""
)

# KEYS: ids set, feed stream, feed counter. ARGV: the job key prefix ("{p}:job:").
# Returns the feed counter, the stream's last id, then id, document, id, document, ...
# taken in one atomic step, so following the stream from that id misses nothing.
# An id whose hash is missing comes with nil (false here): only a delete removes an id
# from the set, so that hash vanished without one (evicted).
# (The job keys are built here, not passed: they share the hash tag, hence the slot.)
LOAD_SCRIPT = (
    _DOC
    + """
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
local out = {redis.call('GET', KEYS[3]) or '0', last[1] and last[1][1] or '0-0'}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local fields = hash(ARGV[1] .. id)
  table.insert(out, id); table.insert(out, fields ~= nil and doc(fields))
end
return out
"""
)


class Keys:
    """The key names of one prefix."""

    def __init__(self, where: RedisLocation) -> None:
        self.job_prefix = where.key("job", "")
        self.ids = where.key("ids")
        self.feed = where.key("feed")
        self.feed_n = where.key("feedn")
        self.batch_prefix = where.key("batch", "")

    def job(self, job_id: str) -> str:
        return self.job_prefix + job_id

    def writes(self, job_id: str) -> list[str]:
        """The KEYS of the write and delete scripts."""
        return [self.job_prefix + job_id, self.ids, self.feed, self.feed_n]


def connect(
    where: RedisLocation, *, timeout: float | None = COMMAND_TIMEOUT, retries: int = 2
) -> redis.Redis:
    """A client for ``where`` (connects on first use). Bytes in, bytes out.

    ``timeout`` bounds each command (None: a blocking read waits as long as it asks).
    A refused or dropped connection is retried ``retries`` times with a short
    backoff (a reader that must notice every lost connection asks for none); a
    timeout is not: redis-py's default retries it too, which made a call to a
    frozen server last ``timeout`` times the tries.
    """
    return redis.Redis(
        host=where.host,
        port=where.port,
        db=where.db,
        username=where.username,
        password=where.password,
        ssl=where.tls,
        **where.ssl_options(),  # type: ignore[arg-type]
        socket_connect_timeout=CONNECT_TIMEOUT,
        socket_timeout=timeout,
        retry=Retry(
            ExponentialBackoff(cap=0.5, base=0.05),
            retries,
            supported_errors=(redis.ConnectionError,),  # not TimeoutError, nor raw socket errors
        ),
        health_check_interval=0,
        client_name="statusbridge",
    )


# Replies that mean "not now": the write may succeed later, so it is an outage (kept and
# tried again, like a full disk), never a lost outcome.
_REFUSED_FOR_NOW = frozenset(
    {"OOM", "LOADING", "BUSY", "MASTERDOWN", "READONLY", "TRYAGAIN", "NOREPLICAS", "CLUSTERDOWN"}
)
# Replies that will not change by trying again: the user must fix the setup.
_REFUSED_FOR_GOOD = frozenset({"NOPERM", "WRONGTYPE"})


def translated(where: RedisLocation, call: Callable[[], T]) -> T:
    """``call()``, with the server's replies raised as errors that name the location.

    Unreachable, or refusing writes for now (out of memory, loading, busy, a replica being
    promoted): ``BackendUnavailable``, an outage. Refusing for good (a missing ACL
    permission, a key of another type, a database the server does not have):
    ``BackendRefused``. Any other reply (a script's own ``INVALID ...``) is left as it is.
    """
    try:
        return call()
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        if "DB index" in str(exc):  # SELECT at connect: a bad /db in the URL
            raise _refused(where, exc) from exc
        raise BackendUnavailable(
            f"the status server {where} is unavailable: {exc}", str(where)
        ) from exc
    except redis.ResponseError as exc:
        code = _reply_code(exc)
        if code in _REFUSED_FOR_NOW:
            raise BackendUnavailable(
                f"the status server {where} refuses writes for now ({code} {exc});"
                " they are tried again",
                str(where),
            ) from exc
        if code in _REFUSED_FOR_GOOD or "DB index" in str(exc):
            raise _refused(where, exc) from exc
        raise


def _reply_code(exc: redis.ResponseError) -> str:
    """The reply's error code (``OOM``, ``NOPERM``...): redis-py strips the ones it knows."""
    code = getattr(exc, "status_code", None)
    if isinstance(code, str) and code:
        return code
    first = str(exc).split(" ", 1)[0]
    return first if first.isupper() else ""


def _refused(where: RedisLocation, exc: Exception) -> BackendRefused:
    reply = str(exc)
    code = _reply_code(exc) if isinstance(exc, redis.ResponseError) else ""
    if code == "NOPERM":
        hint = "the server's ACL does not let this user run it; see the docs' Redis page"
        hint += " for the commands and keys statusbridge needs"
    elif code == "WRONGTYPE":
        hint = "a key under this prefix holds another program's data; use another ?prefix="
    else:
        hint = "the database number in the URL does not exist on this server"
    if code and not reply.startswith(code):
        reply = f"{code} {reply}"  # redis-py strips the codes it knows
    return BackendRefused(f"the status server {where} refused: {reply} ({hint})", str(where), reply)


def decode_doc(job_id: str, data: bytes) -> BatchJob:
    """The job of a document a script returned; InvalidRecordError naming the job if invalid."""
    return decode_job(data, source=f"job {job_id}", expected_id=job_id)
