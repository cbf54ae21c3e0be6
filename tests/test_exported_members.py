"""The public surface, pinned: a name joins or leaves it only by an edit to this file.

statusbridge's API is the top-level ``__all__`` plus the documented adapter modules.
The layer packages (``record``, ``store``, ``cache``, ``jobs``) list only what the docs
present; every other helper is reached by its private path
(``from statusbridge.store.folder._atomic import write_atomic``) and is never re-exported
to look public. Like httpx's ``tests/test_exported_members.py``.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import logging
import types

import pytest

EXPORTED = {
    "statusbridge": [
        "BackendRefused",
        "BackendUnavailable",
        "BatchJob",
        "BatchManager",
        "BatchQueue",
        "BatchStatus",
        "BatchSummary",
        "CacheHealth",
        "InvalidRecordError",
        "JobCancelled",
        "LockTimeout",
        "RecordVanished",
        "Snapshot",
        "StatusBridgeError",
        "StatusCache",
        "StatusStore",
        "UnknownJobError",
        "UnsafeFolderError",
        "__version__",
        "current_job_id",
        "is_cancelled",
        "on_batch_finished",
        "on_job_finished",
        "report_progress",
    ],
    # The layers.
    "statusbridge.record": [
        "BatchJob",
        "BatchStatus",
        "FINISHED",
        "FrozenMap",
        "JOB_ID_PATTERN",
        "MAX_NESTING",
        "SCHEMA_VERSION",
        "decode_job",
        "encode_job",
        "validate_job_id",
    ],
    "statusbridge.store": [
        "DEFAULT_MAX_BYTES",
        "ScanReport",
        "StatusStore",
        "TEMP_DIR",
        "UPDATABLE_FIELDS",
    ],
    "statusbridge.cache": [
        "BatchSummary",
        "CacheHealth",
        "Snapshot",
        "StatusCache",
        "Subscriber",
        "on_batch_finished",
        "on_job_finished",
    ],
    "statusbridge.jobs": [
        "BatchDefinition",
        "BatchManager",
        "BatchQueue",
        "MaintenanceReport",
        "current_job_id",
        "is_cancelled",
        "report_progress",
        "request_cancel",
    ],
    "statusbridge.errors": [
        "BackendRefused",
        "BackendUnavailable",
        "InvalidRecordError",
        "JobCancelled",
        "LockTimeout",
        "RecordVanished",
        "StatusBridgeError",
        "UnknownJobError",
        "UnsafeFolderError",
        "UnusableDatabase",
    ],
    # The adapters.
    "statusbridge.cli": ["main", "main_entry"],
    "statusbridge.display": [
        "BACKEND_TEXTS",
        "BackendText",
        "STATUS_COLOURS",
        "backend_text",
        "batch_eta_seconds",
        "done_text",
        "elapsed_seconds",
        "eta_seconds",
        "floor_share",
        "format_duration",
        "job_share",
        "percent",
        "printable",
        "short_id",
        "state_label",
    ],
    "statusbridge.metrics": ["DEFAULT_BUCKETS", "OTHER_BATCHES", "StatusCollector", "register"],
    "statusbridge.qt": [
        "Column",
        "JobMonitor",
        "JobTableModel",
        "ProgressDelegate",
        "on_gui_thread",
        "quit_on_ctrl_c",
    ],
    "statusbridge.streamlit": [
        "batch_summary",
        "cancel_buttons",
        "check_job_function",
        "escape_markdown",
        "finished_over_time",
        "follow_batch",
        "get_cache",
        "get_manager",
        "health_panel",
        "hide_running_indicator",
        "job_details",
        "job_rows",
        "job_table",
        "keep_workers_out_of_the_script",
        "lifespan",
        "live_fragment",
        "push_available",
        "push_routes",
        "stop_managers",
        "summary_text",
    ],
    "statusbridge.web": ["create_app"],
}

LAYERS = ["statusbridge.record", "statusbridge.store", "statusbridge.cache", "statusbridge.jobs"]
# Packages whose ``__init__`` only gathers names from private modules.
REEXPORTING = {"statusbridge", *LAYERS, "statusbridge.qt", "statusbridge.web"}

# Names without an underscore that a module defines but does not export. Pinned too, so
# that a new one is a decision; renaming these with a leading underscore empties the list.
NOT_EXPORTED: dict[str, list[str]] = {}


def defined_names(module: types.ModuleType) -> set[str]:
    """The public names a module's own top level binds (imports not counted)."""
    tree = ast.parse(inspect.getsource(module))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return {
        name
        for name in names - {"__all__"}
        if not name.startswith("_") and not isinstance(getattr(module, name), logging.Logger)
    }


@pytest.mark.parametrize("name", sorted(EXPORTED))
def test_all_is_pinned(name: str) -> None:
    module = importlib.import_module(name)
    assert sorted(module.__all__) == EXPORTED[name]
    assert len(set(module.__all__)) == len(module.__all__)


@pytest.mark.parametrize("name", sorted(EXPORTED))
def test_every_listed_name_imports(name: str) -> None:
    namespace: dict[str, object] = {}
    exec(f"from {name} import *", namespace)
    assert sorted(set(namespace) - {"__builtins__"}) == EXPORTED[name]


@pytest.mark.parametrize("name", sorted(EXPORTED))
def test_every_public_name_is_listed(name: str) -> None:
    """A module's names without an underscore are its ``__all__``: the rest are private."""
    module = importlib.import_module(name)
    if name in REEXPORTING:
        # Its namespace holds only what it re-exports, and its sub-modules.
        public = {
            member
            for member, value in vars(module).items()
            if (not member.startswith("_") or member == "__version__")
            and not isinstance(value, types.ModuleType)
        }
    else:
        public = defined_names(module) | set(module.__all__)
    assert sorted(public - set(NOT_EXPORTED.get(name, []))) == EXPORTED[name]


def test_layers_export_at_most_forty_names() -> None:
    """The layers' ``__all__``s together: what the docs present of them, nothing more."""
    names = {member for layer in LAYERS for member in importlib.import_module(layer).__all__}
    assert len(names) <= 40, sorted(names)


def test_each_name_is_exported_by_one_module_only() -> None:
    """Besides the top level's re-exports, no name is exported by two public modules.

    (Before, ``floor_share`` and ``elapsed_seconds`` came from both ``record`` and
    ``display``.)
    """
    top = set(EXPORTED["statusbridge"])
    owners: dict[str, list[str]] = {}
    for module, names in EXPORTED.items():
        if module == "statusbridge":
            continue
        for member in set(names) - top:
            owners.setdefault(member, []).append(module)
    assert {member: where for member, where in owners.items() if len(where) > 1} == {}
