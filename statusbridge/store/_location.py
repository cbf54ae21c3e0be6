"""Where status lives: a folder, or a Redis/Valkey server named by a URL.

Every place that takes a status location (stores, caches, queues, managers, the
CLI) passes it through ``parse_location`` so that they all agree on what a
string means, and a malformed URL fails the same way everywhere.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import SplitResult, parse_qs, quote, unquote, urlsplit

__all__ = [
    "DEFAULT_PREFIX",
    "RedisLocation",
    "absolute_location",
    "is_url",
    "location_text",
    "parse_location",
    "require_redis_client",
]

DEFAULT_PREFIX = "statusbridge"
_PREFIX = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_REDIS_SCHEMES = ("redis", "rediss")
# TLS settings a rediss:// URL may carry, named as redis-py names them (so a
# redis-py URL works here unchanged). Paths name PEM files (ssl_ca_path: a folder).
_SSL_PATHS = ("ssl_ca_certs", "ssl_ca_path", "ssl_certfile", "ssl_keyfile")
_SSL_CERT_REQS = ("none", "optional", "required")
_BOOLEANS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
_SSL_PARAMETERS = (*_SSL_PATHS, "ssl_cert_reqs", "ssl_check_hostname")

DEFAULT_STREAM_MAXLEN = 10_000
"""Feed entries a Redis location keeps; a cache further behind than this reloads in full."""


@dataclass(frozen=True)
class RedisLocation:
    """A parsed ``redis://`` or ``rediss://`` URL (``rediss`` is TLS).

    ``prefix`` names this installation's keys; every key is ``{prefix}:...`` (a
    hash tag, so all keys of one prefix live on one Redis Cluster slot).
    """

    url: str
    tls: bool
    host: str
    port: int
    db: int
    username: str | None
    password: str | None
    prefix: str
    ssl: tuple[tuple[str, str | bool], ...] = ()
    """TLS settings from the query (``ssl_ca_certs=...``), as redis-py keyword arguments."""

    def ssl_options(self) -> dict[str, str | bool]:
        """The redis-py keyword arguments of ``ssl`` (empty for ``redis://``)."""
        return dict(self.ssl)

    def client_url(self) -> str:
        """The URL redis-py understands: without our ``prefix`` query parameter."""
        scheme = "rediss" if self.tls else "redis"
        auth = ""
        if self.username is not None or self.password is not None:
            auth = quote(self.username or "", safe="")
            if self.password is not None:
                auth += ":" + quote(self.password, safe="")
            auth += "@"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{auth}{host}:{self.port}/{self.db}"

    def key(self, *parts: str) -> str:
        return ":".join(("{" + self.prefix + "}", *parts))

    def __str__(self) -> str:
        """The URL without its password, for logs, errors and ``health()``."""
        shown = self.client_url()
        if self.password is not None:
            shown = shown.replace(":" + quote(self.password, safe="") + "@", ":***@", 1)
        return f"{shown}?prefix={self.prefix}"


def require_redis_client() -> None:
    """Name the extra to install, instead of ``No module named 'redis'`` deep in a backend.

    redis-py is an extra (imported only for a URL), and statusbridge is installed
    from its clone, so the hint is the clone's command.
    """
    if importlib.util.find_spec("redis") is None:
        raise ModuleNotFoundError(
            "a redis:// location needs redis-py, which is not installed: "
            "pip install -e '.[redis]' (the statusbridge[redis] extra)",
            name="redis",
        )


def is_url(location: str | os.PathLike[str] | RedisLocation) -> bool:
    """True for a ``scheme://`` string (which ``parse_location`` accepts or rejects)."""
    return isinstance(location, str) and _SCHEME.match(location) is not None


def parse_location(location: str | os.PathLike[str] | RedisLocation) -> Path | RedisLocation:
    """A folder (a path, or ``file:///abs/path``) or a Redis location.

    Raises ValueError naming the location for a URL it cannot use.

    >>> parse_location("batch_status")
    PosixPath('batch_status')
    >>> str(parse_location("redis://localhost:6380/2?prefix=app"))
    'redis://localhost:6380/2?prefix=app'
    """
    if isinstance(location, RedisLocation):
        return location
    if not is_url(location):
        return Path(location)
    assert isinstance(location, str)
    try:
        parts = urlsplit(location)
        port = parts.port  # ValueError for a non-numeric or out-of-range port
    except ValueError as exc:
        raise ValueError(f"malformed status location {location!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise ValueError(
                f"malformed status location {location!r}: a file URL names an absolute "
                "local path (file:///abs/path)"
            )
        if parts.query or parts.fragment:
            raise ValueError(f"malformed status location {location!r}: no query in a file URL")
        return Path(unquote(parts.path))
    if scheme not in _REDIS_SCHEMES:
        raise ValueError(
            f"unsupported status location {location!r}: use a folder, file:///abs/path, "
            "redis://host[:port][/db][?prefix=NAME] or rediss://..."
        )
    return _parse_redis(location, parts.hostname, port, parts)


def _parse_redis(
    location: str, host: str | None, port: int | None, parts: SplitResult
) -> RedisLocation:
    def bad(why: str) -> ValueError:
        return ValueError(f"malformed status location {location!r}: {why}")

    if not host:
        raise bad("no host")
    if parts.fragment:
        raise bad("a fragment (#...) means nothing here")
    path = parts.path.strip("/")
    if not path:
        db = 0
    elif path.isascii() and path.isdigit():
        db = int(path)
        if db > 2**31 - 1:  # what SELECT takes; a server's own limit (16 by default) it says
            raise bad(f"the database number {db} is out of range (0 to {2**31 - 1})")
    else:
        raise bad(f"the database must be a number, not {path!r}")
    try:
        query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError as exc:
        raise bad(f"query {parts.query!r}: {exc}") from None
    unknown = set(query) - {"prefix", *_SSL_PARAMETERS}
    if unknown:
        raise bad(
            f"unknown parameter(s) {', '.join(sorted(unknown))} "
            f"(only prefix=NAME, and with rediss:// {', '.join(_SSL_PARAMETERS)})"
        )
    prefixes = query.get("prefix", [DEFAULT_PREFIX])
    if len(prefixes) != 1 or not _PREFIX.fullmatch(prefixes[0]):
        raise bad(
            f"prefix {prefixes!r} must be one name of letters, digits, '.', '_', ':' or '-' "
            "(at most 64, no braces)"
        )
    tls = parts.scheme.lower() == "rediss"
    return RedisLocation(
        url=location,
        tls=tls,
        host=host,
        port=port if port is not None else 6379,
        db=db,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        prefix=prefixes[0],
        ssl=_ssl_options(query, tls, bad),
    )


def _ssl_options(
    query: dict[str, list[str]], tls: bool, bad: Callable[[str], ValueError]
) -> tuple[tuple[str, str | bool], ...]:
    """The TLS parameters of a query, checked: files that exist, known words."""
    given = [name for name in _SSL_PARAMETERS if name in query]
    if given and not tls:
        raise bad(f"{', '.join(given)} need a TLS location: rediss://, not redis://")
    options: list[tuple[str, str | bool]] = []
    for name in given:
        values = query[name]
        if len(values) != 1 or not values[0]:
            raise bad(f"{name} needs exactly one non-empty value, got {values!r}")
        value = values[0]
        if name in _SSL_PATHS:
            path = Path(value).expanduser().absolute()
            wanted_dir = name == "ssl_ca_path"
            if not (path.is_dir() if wanted_dir else path.is_file()):
                kind = "folder" if wanted_dir else "file"
                raise bad(f"{name}: no {kind} {str(path)!r}")
            options.append((name, str(path)))
        elif name == "ssl_cert_reqs":
            if value.lower() not in _SSL_CERT_REQS:
                allowed = ", ".join(_SSL_CERT_REQS)
                raise bad(f"ssl_cert_reqs must be one of {allowed}, not {value!r}")
            options.append((name, value.lower()))
        else:
            if value.lower() not in _BOOLEANS:
                raise bad(f"{name} must be true or false, not {value!r}")
            options.append((name, _BOOLEANS[value.lower()]))
    chosen = dict(options)
    if "ssl_keyfile" in chosen and "ssl_certfile" not in chosen:
        raise bad("ssl_keyfile needs ssl_certfile (the client certificate it belongs to)")
    if chosen.get("ssl_cert_reqs") == "none":
        # No certificate check means no host name check (Python's ssl refuses the mix).
        if chosen.get("ssl_check_hostname") is True:
            raise bad("ssl_check_hostname=true needs a certificate check, not ssl_cert_reqs=none")
        options.append(("ssl_check_hostname", False))
    return tuple(dict(options).items())


def absolute_location(location: str | os.PathLike[str]) -> str:
    """A location another process (or a later call) opens the same: a URL as given
    (password included), a folder as its absolute path. ValueError for a bad URL."""
    parsed = parse_location(location)
    if isinstance(parsed, RedisLocation):
        return parsed.url
    return str(parsed.absolute())


def location_text(location: str | os.PathLike[str]) -> str:
    """A location as one string: a folder's absolute path, or the URL (password hidden)."""
    parsed = parse_location(location)
    if isinstance(parsed, RedisLocation):
        return str(parsed)
    return str(parsed.absolute())
