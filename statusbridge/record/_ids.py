"""Job ids become file names, so they are checked before any file is touched."""

from __future__ import annotations

import re

__all__ = ["JOB_ID_PATTERN", "validate_job_id"]

JOB_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", re.ASCII)

# Windows maps these names (with any extension) to devices; refusing them everywhere
# keeps a status folder portable between operating systems.
_WINDOWS_RESERVED = frozenset(
    ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"]
    + [f"COM{i}" for i in range(10)]
    + [f"LPT{i}" for i in range(10)]
)


# Ids already checked: every record decode checks its id and batch id, and the
# same ids come back again and again. Plain set operations are atomic under the GIL.
_known_valid: set[str] = set()
_KNOWN_VALID_MAX = 200_000


def validate_job_id(job_id: object) -> str:
    """Return ``job_id`` if it is a safe id, else raise ValueError (TypeError for non-str).

    >>> validate_job_id("job-1.part_2")
    'job-1.part_2'
    >>> validate_job_id("../etc/passwd")
    Traceback (most recent call last):
    ...
    ValueError: invalid job id '../etc/passwd': ids must match [A-Za-z0-9][A-Za-z0-9._-]{0,127}
    """
    if type(job_id) is str and job_id in _known_valid:
        return job_id
    if not isinstance(job_id, str):
        raise TypeError(f"job id must be a str, not {type(job_id).__name__}")
    if JOB_ID_PATTERN.fullmatch(job_id) is None:
        raise ValueError(
            f"invalid job id {job_id!r}: ids must match [A-Za-z0-9][A-Za-z0-9._-]{{0,127}}"
        )
    if job_id.endswith("."):
        raise ValueError(f"invalid job id {job_id!r}: ids must not end with '.'")
    if job_id.split(".", 1)[0].upper() in _WINDOWS_RESERVED:
        raise ValueError(f"invalid job id {job_id!r}: reserved device name on Windows")
    if len(_known_valid) >= _KNOWN_VALID_MAX:
        _known_valid.clear()  # a bound, not an LRU: refilling is cheap
    _known_valid.add(job_id)
    return job_id
