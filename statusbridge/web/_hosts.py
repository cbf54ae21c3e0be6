"""Which ``Host`` headers a server answers: the check that stops DNS rebinding.

A page on another site can make a browser send requests to 127.0.0.1 under that
site's own name; refusing every name but the ones the server is known by closes that.
Shared by ``statusbridge.web`` and the Streamlit push route; needs only the standard library.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

__all__ = ["host_allowed"]


def host_allowed(host: str | None, allowed: Sequence[str]) -> bool:
    """Whether a request's ``Host`` header names one of ``allowed`` (an empty list: any).

    Streamlit's rule for ``server.allowedHosts``: the port is ignored, ``*.example.com``
    matches subdomains, ``*`` matches any name.

    >>> host_allowed("127.0.0.1:8501", ["localhost", "127.0.0.1"])
    True
    >>> host_allowed("evil.test:8501", ["localhost", "127.0.0.1"])
    False
    >>> host_allowed("[::1]:8501", ["::1"])
    True
    """
    if not allowed:
        return True
    if host is None:
        return False
    try:
        parsed = urlsplit(f"//{host}")
        name, _ = parsed.hostname, parsed.port  # .port validates the port
    except ValueError:
        return False
    if name is None or parsed.username is not None or parsed.path:
        return False
    name = name.lower().rstrip(".")
    for pattern in (p.strip().lower().rstrip(".") for p in allowed):
        if pattern in ("*", name):
            return True
        if pattern.startswith("*.") and name.endswith(pattern[1:]):
            return True
    return False
