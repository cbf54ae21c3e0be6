"""MkDocs hook: the benchmark's own output files, published as they are in ``bench/results/``.

``python -m bench`` writes ``results.md`` (the full tables) and ``render.png`` there; copying
them into ``docs/`` by hand would leave two copies to drift apart, so the site takes them from
where the benchmark writes them, as ``benchmarks/results.md`` and ``benchmarks/render.png``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"


def on_files(files: Files, config: Any, **kwargs: Any) -> Files:
    for name in ("results.md", "render.png"):
        files.append(File.generated(config, f"benchmarks/{name}", abs_src_path=str(RESULTS / name)))
    return files
