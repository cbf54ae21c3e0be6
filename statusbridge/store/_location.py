"""Where status lives, and the registry of backends: a folder, a SQLite file, a Redis server.

Every place that takes a status location (stores, caches, queues, managers, the
CLI) passes it through ``backend_for`` (or ``parse_location``) so that they all
agree on what a string means, and a malformed URL fails the same way everywhere.

A backend is one ``Backend`` registration below: the URL schemes it answers,
the parser of its locations, and where its three parts live (store, cache,
shelf), named as ``"module:attribute"`` and imported on first use. So this
module imports no backend, a location never imports another backend's client
library, and the base classes (``StatusStore``, ``StatusCache``) open a backend
through here without importing their subclasses.

Layout of the backends' code: per layer, one folder per backend
(``store/<backend>/`` and ``cache/<backend>/``: ``folder``, ``redis``, ``sqlite``),
not one folder per backend holding both sides. The layers are the architecture:
the store side must stay importable without the cache side (``tests/test_layers.py``),
and a folder holding both would sit in neither layer. A backend's folder holds its
private modules; its ``__init__`` names what the registration below points at.
Someone adding a fourth backend writes ``store/<name>/`` and ``cache/<name>/`` and
one registration here, nothing else.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union
from urllib.parse import SplitResult, parse_qs, quote, unquote, urlsplit

__all__ = [
    "DEFAULT_PREFIX",
    "Backend",
    "Location",
    "RedisLocation",
    "SqliteLocation",
    "absolute_location",
    "backend_for",
    "check_options",
    "is_url",
    "location_text",
    "parse_location",
    "register_backend",
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


@dataclass(frozen=True)
class SqliteLocation:
    """A parsed ``sqlite:///relative.db`` or ``sqlite:////absolute.db`` URL (SQLAlchemy's form).

    ``path`` is absolute: a relative URL is resolved against the working directory
    when it is parsed, so every part of one process opens the same file.
    """

    url: str
    path: Path

    def absolute_url(self) -> str:
        """The URL another process opens the same, wherever its working directory."""
        return "sqlite:///" + str(self.path)

    def __str__(self) -> str:
        return self.absolute_url()


Location = Union[Path, RedisLocation, SqliteLocation]  # noqa: UP007 (a runtime alias)


def is_url(location: object) -> bool:
    """True for a ``scheme://`` string (which ``parse_location`` accepts or rejects)."""
    return isinstance(location, str) and _SCHEME.match(location) is not None


# -- the registry ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backend:
    """One backend: its name, URL schemes, location parser and its three parts.

    ``store``, ``cache`` and ``shelf`` are ``"module:attribute"``, imported on first
    use; ``shelf`` names a callable ``(location, create=...) -> Shelf``. ``requires``
    names a client library that must be installed (checked before importing).
    """

    name: str
    schemes: tuple[str, ...]
    kind: type
    parse: Callable[[str, SplitResult], Any]
    store: str
    cache: str
    shelf: str
    requires: Callable[[], None] | None = None

    def load(self, part: str) -> Any:
        """The store class, cache class or shelf opener (``part``: "store", "cache", "shelf")."""
        if self.requires is not None:
            self.requires()
        module, _, path = getattr(self, part).partition(":")
        found: Any = importlib.import_module(module)
        for attribute in path.split("."):
            found = getattr(found, attribute)
        return found


_BACKENDS: list[Backend] = []
_BY_SCHEME: dict[str, Backend] = {}


def register_backend(backend: Backend) -> Backend:
    """Add a backend (its schemes must be new); returns it."""
    taken = [s for s in backend.schemes if s in _BY_SCHEME]
    if taken:
        raise ValueError(f"scheme(s) {', '.join(taken)} already belong to a backend")
    _BACKENDS.append(backend)
    for scheme in backend.schemes:
        _BY_SCHEME[scheme] = backend
    return backend


def backend_for(location: str | os.PathLike[str] | Location) -> tuple[Backend, Location]:
    """The backend of ``location`` and the location parsed by it.

    A path (or ``file:///abs/path``) is a folder; a URL goes to the backend that
    registered its scheme. ValueError naming the location for a URL nobody takes
    or one its backend cannot use.
    """
    for backend in _BACKENDS:
        if backend.kind is not Path and isinstance(location, backend.kind):
            return backend, location  # type: ignore[return-value]
    if not is_url(location):
        assert not isinstance(location, (RedisLocation, SqliteLocation))
        if isinstance(location, str):
            scheme = location.partition(":")[0].lower()
            if scheme in _BY_SCHEME and scheme != "file" and ":" in location:
                raise ValueError(
                    f"malformed status location {location!r}: a {scheme} URL starts "
                    f"{scheme}:// (a folder named {scheme + ':'!r} would be a surprise)"
                )
        return _BY_SCHEME["file"], Path(location)
    assert isinstance(location, str)
    try:
        parts = urlsplit(location)
        parts.port  # noqa: B018 (ValueError for a non-numeric or out-of-range port)
    except ValueError as exc:
        raise ValueError(f"malformed status location {location!r}: {exc}") from None
    found = _BY_SCHEME.get(parts.scheme.lower())
    if found is None:
        raise ValueError(
            f"unsupported status location {location!r}: use a folder, file:///abs/path, "
            "sqlite:///relative.db, sqlite:////absolute.db, "
            "redis://host[:port][/db][?prefix=NAME] or rediss://..."
        )
    return found, found.parse(location, parts)


def parse_location(location: str | os.PathLike[str] | Location) -> Location:
    """A folder (a path, or ``file:///abs/path``), a Redis location or a SQLite location.

    Raises ValueError naming the location for a URL it cannot use.

    >>> parse_location("batch_status")
    PosixPath('batch_status')
    >>> str(parse_location("redis://localhost:6380/2?prefix=app"))
    'redis://localhost:6380/2?prefix=app'
    >>> str(parse_location("sqlite:////srv/status.db"))
    'sqlite:////srv/status.db'
    """
    return backend_for(location)[1]


def check_options(backend: str, opened: type, given: Mapping[str, object]) -> None:
    """TypeError naming the option and the backend, for an option ``opened`` does not take.

    ``given`` holds the options passed (None: not passed); ``opened`` is the backend's
    class, whose keyword-only ``__init__`` parameters are what it takes.
    """
    params = inspect.signature(vars(opened).get("__init__", opened)).parameters
    takes = [n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    refused = sorted(n for n, value in given.items() if value is not None and n not in takes)
    if refused:
        raise TypeError(
            f"{', '.join(refused)}: not an option of the {backend} backend "
            f"({opened.__name__} takes {', '.join(takes)})"
        )


def _parse_file(location: str, parts: SplitResult) -> Path:
    if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
        raise ValueError(
            f"malformed status location {location!r}: a file URL names an absolute "
            "local path (file:///abs/path)"
        )
    if parts.query or parts.fragment:
        raise ValueError(f"malformed status location {location!r}: no query in a file URL")
    return Path(unquote(parts.path))


def _parse_sqlite(location: str, parts: SplitResult) -> SqliteLocation:
    """SQLAlchemy's convention: ``sqlite:///rel.db`` (cwd), ``sqlite:////abs.db``."""

    def bad(why: str) -> ValueError:
        return ValueError(f"malformed status location {location!r}: {why}")

    if parts.netloc:
        raise bad(
            f"a host part ({parts.netloc!r}) means nothing to SQLite, a local file: "
            "sqlite:///relative/path.db or sqlite:////absolute/path.db"
        )
    if parts.query or parts.fragment:
        raise bad("no query or fragment in a sqlite URL")
    if not location.lower().startswith("sqlite:///"):
        raise bad("write sqlite:///relative/path.db or sqlite:////absolute/path.db")
    raw = unquote(location[len("sqlite:///") :])
    if not raw or raw.endswith("/") or "\0" in raw:
        raise bad("no database file named (sqlite:///relative/path.db)")
    if raw == ":memory:":
        raise bad("an in-memory database is visible to one connection only; name a file")
    return SqliteLocation(url=location, path=Path(raw).absolute())


def _parse_redis(location: str, parts: SplitResult) -> RedisLocation:
    host, port = parts.hostname, parts.port

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


def absolute_location(location: str | os.PathLike[str] | Location) -> str:
    """A location another process (or a later call) opens the same: a Redis URL as given
    (password included), a SQLite URL with its absolute path, a folder as its absolute
    path. ValueError for a bad URL."""
    parsed = parse_location(location)
    if isinstance(parsed, RedisLocation):
        return parsed.url
    if isinstance(parsed, SqliteLocation):
        return parsed.absolute_url()
    return str(parsed.absolute())


def location_text(location: str | os.PathLike[str] | Location) -> str:
    """A location as one string: a folder's absolute path, or the URL (password hidden)."""
    parsed = parse_location(location)
    if isinstance(parsed, Path):
        return str(parsed.absolute())
    return str(parsed)


register_backend(
    Backend(
        "folder",
        ("file",),
        Path,
        _parse_file,
        store="statusbridge.store.folder:FolderStore",
        cache="statusbridge.cache.folder:FolderCache",
        shelf="statusbridge.store.folder:FolderShelf.open",
    )
)
register_backend(
    Backend(
        "redis",
        _REDIS_SCHEMES,
        RedisLocation,
        _parse_redis,
        store="statusbridge.store.redis:RedisStore",
        cache="statusbridge.cache.redis:RedisCache",
        shelf="statusbridge.store.redis:RedisShelf.open",
        requires=require_redis_client,
    )
)
register_backend(
    Backend(
        "sqlite",
        ("sqlite",),
        SqliteLocation,
        _parse_sqlite,
        store="statusbridge.store.sqlite:SqliteStore",
        cache="statusbridge.cache.sqlite:SqliteCache",
        shelf="statusbridge.store.sqlite:SqliteShelf.open",
    )
)
