"""Worker processes under ``streamlit run``: never running the script, never given its functions.

Streamlit runs the script in a module it installs as ``sys.modules["__main__"]``
and leaves there, so a spawned child would run the script first (multiprocessing
re-runs the parent's ``__main__`` file in every child). Adapter-private: the
public names are re-exported by ``statusbridge.streamlit``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType
from typing import Any

from streamlit.runtime.scriptrunner import get_script_run_ctx

__all__ = ["check_job_function", "keep_workers_out_of_the_script"]


def _running_script() -> ModuleType | None:
    """The module Streamlit runs the script in, if this thread runs a script now.

    Streamlit installs it as ``sys.modules["__main__"]`` (and leaves it there).
    """
    ctx = get_script_run_ctx(suppress_warning=True)
    main = sys.modules.get("__main__")
    if ctx is None or main is None:
        return None
    if Path(getattr(main, "__file__", "") or "").resolve() != Path(ctx.main_script_path).resolve():
        return None
    return main


def keep_workers_out_of_the_script() -> None:
    """Stop spawned worker processes from running the Streamlit script again.

    A spawned child runs the parent's ``__main__`` file first, and under ``streamlit
    run`` that is the script: every worker would render the page without a session
    (a log full of ScriptRunContext warnings) and start its own observer. A main
    module whose spec is named ``__main__`` is one multiprocessing does not re-run,
    so the script's module is given such a spec. Called by ``get_manager``.
    """
    script = _running_script()
    if script is not None and getattr(script, "__spec__", None) is None:
        script.__spec__ = ModuleSpec("__main__", None)


def check_job_function(func: Callable[[Any], Any]) -> None:
    """Raise ``TypeError`` naming where to move ``func`` if process workers cannot import it.

    Workers import a job function from its module; one defined in the Streamlit
    script lives in no module they can import (and they never run the script).
    """
    script = _running_script()
    if script is None or getattr(func, "__module__", None) != "__main__":
        return
    where = Path(script.__file__ or "the script")
    name = getattr(func, "__qualname__", repr(func))
    raise TypeError(
        f"{name} is defined in the Streamlit script {where.name}: worker processes import "
        f"job functions from a module and never run the script. Move it to a module next "
        f"to the script, e.g. {where.parent / 'jobs.py'}, and import it "
        f"('from jobs import {name}'), or use executor='thread'."
    )
