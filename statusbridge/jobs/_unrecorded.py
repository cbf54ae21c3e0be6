"""Cancelling a batch job that has no record yet, from any process.

A started batch's jobs start from their owner's memory: a job's record is written
when it ends, when it outlives ``record_delay``, or when it still waits after that
(see ``_batch_feed``). Its batch definition names it all along, so another process
(a second manager, the CLI, the web API) may cancel it meanwhile: the definition then
names the job among its cancelled ones (compare-and-swap), and the job's record is
created CANCELLED, only where there is none. The owner asks the definition before it
takes the job from memory and does not run it; a job already running from memory
finds the record final at its first write, keeps it, and stops.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from statusbridge.jobs._batch_feed import CANCELLED_ALONE, pending_fields
from statusbridge.jobs._cancel import request_cancel
from statusbridge.jobs._definition import is_valid_job_id
from statusbridge.jobs._definitions import Definitions
from statusbridge.store import StatusStore
from statusbridge.store._location import is_url
from statusbridge.store._shelf import open_shelf

__all__ = ["cancel_unrecorded", "cancel_unrecorded_at"]

logger = logging.getLogger(__name__)


def cancel_unrecorded(store: StatusStore, definitions: Definitions, job_id: str) -> bool:
    """Create the CANCELLED record of a started batch's job that has none; True if the
    job is now asked to stop (a record made meanwhile by its owner is cancelled as any).

    False if no started, unfinished batch of ``definitions`` names ``job_id``.
    """
    batch_id = job_id.rpartition("-")[0]
    if not is_valid_job_id(batch_id):
        return False
    found = definitions.fresh(batch_id)
    if found is None:
        return False
    definition = found[1]
    if definition.started_at is None or definition.final is not None:
        return False
    try:
        index = definition.job_ids.index(job_id)
    except ValueError:
        return False
    if store.read(job_id) is not None:
        return request_cancel(store, job_id)  # recorded: its owner reads it before it runs
    # First the definition, which the owner asks before it starts the job from memory;
    # then the record, for everyone to see (and for an owner that writes PENDING records
    # first); then the wait after which every owner's look sees the definition.
    named = definitions.mark_job_cancelled(batch_id, job_id)
    fields = {**pending_fields(definition.params[index], batch_id), **CANCELLED_ALONE}
    if store.modify(job_id, lambda current: fields if current is None else None) is None:
        request_cancel(store, job_id)  # its record was made meanwhile
    if named is not None and job_id in named.cancelled_jobs:
        definitions.settle()
    return True


def cancel_unrecorded_at(store: StatusStore, where: str | os.PathLike[str], job_id: str) -> bool:
    """``cancel_unrecorded`` with the definitions kept at ``where`` (a ``BatchManager``'s
    ``batch_dir``), for a cancel from outside the manager. False if there are none."""
    if not is_url(where) and not Path(where).is_dir():
        return False
    shelf = open_shelf(where, create=False)
    try:
        return cancel_unrecorded(store, Definitions(shelf, load=False), job_id)
    finally:
        shelf.close()
