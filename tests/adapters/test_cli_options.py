"""One name per option across subcommands; usage errors name the subcommand's help (issue 22,
item 8: `ls --status` but `watch --state`, and the error pointed at 'statusbridge --help')."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from statusbridge import StatusStore
from statusbridge.cli import main
from statusbridge.cli._parser import build_parser


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    with StatusStore(tmp_path / "status") as store:
        store.update("busy", status="running", progress=0.5)
        store.update("broke", status="failed", error_message="E: x")
    return tmp_path / "status"


@pytest.mark.parametrize("command", [["ls"], ["watch", "--once"]])
@pytest.mark.parametrize("option", ["--status", "--state"])
def test_status_filter_has_one_name_and_an_alias(
    folder: Path, command: list[str], option: str
) -> None:
    out = io.StringIO()
    assert main([*command, "--dir", str(folder), option, "failed"], out=out) == 0
    assert "broke" in out.getvalue() and "busy" not in out.getvalue()


def test_every_subcommand_spells_the_status_filter_alike() -> None:
    parser = build_parser()
    subparsers: Any = next(a for a in parser._actions if a.dest == "command").choices
    for name in ("ls", "watch"):
        strings = {s for a in subparsers[name]._actions for s in a.option_strings}
        assert {"--status", "--state"} <= strings, name
        assert "--status" in subparsers[name].format_help()


def test_usage_errors_point_at_the_subcommands_help(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["watch", "--dir", str(folder), "--bogus", "x"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "statusbridge: error: unrecognized arguments: --bogus x (see 'statusbridge watch --help')"
    )
    assert main(["ls", "--dir", str(folder), "--status", "nope"]) == 2
    assert "(see 'statusbridge ls --help')" in capsys.readouterr().err


@pytest.mark.slow  # the command in subprocesses
def test_ls_into_head_exits_as_documented(tmp_path: Path) -> None:
    """Issue 22, item 13: 141 when the output does not fit in the pipe's buffer; a short one
    exits 0 or, if head left before the last write, 141 (a race the docs describe)."""
    import subprocess
    import sys

    folder = tmp_path / "status"
    with StatusStore(folder) as store:
        store.update("one", status="running")
    codes = {}
    for name, jobs in (("small", 1), ("big", 1500)):  # about 150 KiB of table: > 64 KiB
        if name == "big":
            with StatusStore(folder) as store:
                for i in range(jobs):
                    store.update(f"job-{i:05d}", status="pending", message="m" * 80)
        r = subprocess.run(
            f"{sys.executable} -m statusbridge ls --json --dir {folder} | head -1; "
            'echo "status=${PIPESTATUS[0]}" >&2',
            shell=True, executable="/bin/bash", capture_output=True, text=True, timeout=120,
            check=False,
        )  # fmt: skip
        codes[name] = r.stderr.strip()
    assert codes["small"] in ("status=0", "status=141") and codes["big"] == "status=141", codes
    import statusbridge.cli

    assert "exits 141 when the output is more than the pipe holds" in " ".join(
        (statusbridge.cli.__doc__ or "").split()
    )
