"""The `statusbridge` command, run for real in a subprocess against real folders and writers."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import multiprocessing as mp
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from statusbridge import BatchStatus, StatusCache, StatusStore
from statusbridge.cli import main
from statusbridge.record._model import utc_now

from support.paused_start import assert_none_started_after, batch_paused_in_its_start
from support.platform import NATIVE_BACKEND, run_as_nobody
from support.processes import child_env, popen
from support.waiting import wait_until
from support.workers import progress_writer

pytestmark = pytest.mark.slow  # the command runs in a subprocess


def cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "statusbridge", *args],
        capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
        check=False,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    folder = tmp_path / "status"
    store = StatusStore(folder)
    store.update("alpha", status="running", progress=0.4, message="loading", batch_id="b1")
    store.update("beta", status="completed", result=1, batch_id="b1")
    store.update("gamma", status="failed", error_message="ValueError: nope")
    return folder


def test_ls_table_and_filters(folder: Path) -> None:
    r = cli("ls", "--dir", str(folder))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split()[:4] == ["ID", "BATCH", "STATE", "PROGRESS"]
    assert "alpha" in r.stdout and "[####------]  40%" in r.stdout and "loading" in r.stdout
    assert "ValueError: nope" in r.stdout
    running = cli("ls", "--dir", str(folder), "--status", "running")
    assert "alpha" in running.stdout and "beta" not in running.stdout
    batch = cli("ls", "--dir", str(folder), "--batch", "b1")
    assert "beta" in batch.stdout and "gamma" not in batch.stdout


def test_ls_into_a_pipe_prints_full_values(tmp_path: Path) -> None:
    store = StatusStore(tmp_path)
    batch = "batch-20261129-101010-0123456789abcdef"
    ids = [f"{batch}-{i:04d}" for i in range(3)]
    for job_id in ids:
        store.update(job_id, batch_id=batch, status="running", progress=0.95, message="m " * 80)
    store.update("other", batch_id="a-second-batch-with-a-long-name")
    r = cli("ls", "--dir", str(tmp_path), env={"COLUMNS": "60"})
    assert r.returncode == 0, r.stderr
    rows = {line.split()[0]: line.split() for line in r.stdout.splitlines()[1:]}
    assert set(rows) == {*ids, "other"}  # every id whole, so rows stay distinguishable
    assert rows[ids[0]][1] == batch and rows["other"][1] == "a-second-batch-with-a-long-name"
    assert "[#########-]  95%" in r.stdout  # 95% never draws a full bar
    assert r.stdout.splitlines()[1].endswith("m " * 79 + "m")  # the message, whole


def test_ls_into_a_closed_pipe_is_quiet(folder: Path) -> None:
    for _ in range(3):  # the reader may go before or after the first write: both are quiet
        r = subprocess.run(
            f"{sys.executable} -m statusbridge ls --dir {folder} | head -1; "
            'echo "status=${PIPESTATUS[0]}" >&2',
            shell=True, executable="/bin/bash", capture_output=True, text=True, timeout=60,
            check=False,
        )  # fmt: skip
        assert r.stdout.startswith("ID "), r
        assert r.stderr.strip() in ("status=0", "status=141"), r.stderr


def test_ls_json_and_env_dir(folder: Path) -> None:
    r = cli("ls", "--json", env={"STATUSBRIDGE_DIR": str(folder)})
    assert r.returncode == 0, r.stderr
    docs = json.loads(r.stdout)
    assert [d["id"] for d in docs] == ["alpha", "beta", "gamma"]
    assert docs[0]["schema"] == 1 and docs[0]["progress"] == 0.4


def test_show(folder: Path) -> None:
    r = cli("--dir", str(folder), "show", "beta")
    assert r.returncode == 0
    assert json.loads(r.stdout)["result"] == 1
    missing = cli("--dir", str(folder), "show", "nope")
    assert missing.returncode == 1
    assert missing.stderr.strip() == f"statusbridge: error: no job 'nope' in '{folder}'"
    bad = cli("--dir", str(folder), "show", "../etc")
    assert bad.returncode == 2
    assert "invalid job id" in bad.stderr and "Traceback" not in bad.stderr


def test_errors_are_one_line_with_exit_codes(tmp_path: Path) -> None:
    missing = cli("ls", "--dir", str(tmp_path / "nope"))
    assert missing.returncode == 2
    assert missing.stderr.count("\n") == 1 and "does not exist" in missing.stderr
    assert not (tmp_path / "nope").exists()  # a read command creates nothing
    bad_option = cli("ls", "--colour")
    assert bad_option.returncode == 2
    assert bad_option.stderr.count("\n") == 1 and "unrecognized arguments" in bad_option.stderr
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "x.json").write_text("{broken")
    unreadable = cli("show", "x", "--dir", str(tmp_path / "s"))
    assert unreadable.returncode == 1
    assert "not valid JSON" in unreadable.stderr and "Traceback" not in unreadable.stderr


@pytest.mark.parametrize("command", ["ls", "watch --once"])
def test_a_url_without_the_redis_extra_names_it(command: str) -> None:
    """A URL on an install without redis-py: one line naming the extra, not a traceback."""
    argv = ["--dir", "redis://127.0.0.1:1/0", *command.split()]
    code = (
        "import sys; sys.modules['redis'] = None; "  # as if redis-py were not installed
        "from statusbridge.cli import main; "
        f"sys.exit(main({argv!r}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "pip install -e '.[redis]'" in done.stderr


@pytest.mark.parametrize("opener", ["StatusStore", "StatusCache"])
def test_the_library_names_the_redis_extra_too(opener: str) -> None:
    check = (
        "import sys; sys.modules['redis'] = None; import statusbridge\n"  # as if not installed
        f"try: statusbridge.{opener}('redis://127.0.0.1:1/0')\n"
        "except ModuleNotFoundError as exc: print(exc.name, exc)"
    )
    said = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, timeout=60, check=True
    )
    assert said.stdout.startswith("redis a redis:// location needs redis-py")


def test_watch_until_done_with_a_live_writer(tmp_path: Path) -> None:
    folder, go = tmp_path / "status", tmp_path / "go"
    ids = ["w1", "w2", "w3"]
    writer = mp.get_context("spawn").Process(
        target=progress_writer, args=(str(folder), ids, 10, str(go))
    )
    writer.start()
    wait_until(lambda: folder.is_dir() and len(StatusStore(folder).scan()) == 3, 60)
    watcher = subprocess.Popen(
        [sys.executable, "-m", "statusbridge", "watch", "--until-done", "--dir", str(folder)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert watcher.stdout is not None
        # The first frame is drawn once its cache watches the folder (watch, then scan, then
        # draw): only now may the writer start, or it could finish before anyone watches.
        first = ""
        while (line := watcher.stdout.readline()) not in ("\n", ""):  # a frame ends blank
            first += line
        assert first.startswith("statusbridge watch"), (first, watcher.communicate(timeout=60))
        go.touch()
        rest, err = watcher.communicate(timeout=60)
        writer.join(60)
    finally:
        watcher.kill()  # no-ops once they have exited
        writer.kill()
        watcher.wait(30)
        writer.join(30)
    assert watcher.returncode == 0, err
    assert writer.exitcode == 0
    frames = [first.strip(), *rest.strip().split("\n\n")]
    assert len(frames) >= 2  # redrawn on changes, not once
    assert frames[0].splitlines()[-2] == "3 jobs: 3 pending"
    assert frames[-1].splitlines()[-2] == "3 jobs: 3 completed"
    assert frames[-1].splitlines()[-1] == "overall [####################] 100%"
    assert all(len(line) <= 80 for frame in frames for line in frame.splitlines()[1:])
    assert "step 10" in frames[-1]


def test_watch_once_and_batch_filter(folder: Path) -> None:
    r = cli("watch", "--once", "--batch", "b1", "--dir", str(folder))
    assert r.returncode == 0
    assert "alpha" in r.stdout and "gamma" not in r.stdout
    assert "2 jobs: 1 running, 1 completed" in r.stdout


def test_watch_ends_cleanly_on_ctrl_c(folder: Path) -> None:
    watcher = popen(  # Ctrl-C's default action, even where pytest runs with SIGINT ignored
        [sys.executable, "-m", "statusbridge", "watch", "--dir", str(folder)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert watcher.stdout is not None
        first = watcher.stdout.readline()  # the first frame is drawn: it is in its loop
        assert first.startswith("statusbridge watch")
        watcher.send_signal(signal.SIGINT)
        _, err = watcher.communicate(timeout=30)
    finally:
        watcher.kill()  # a no-op once it has exited
        watcher.wait(30)
    assert watcher.returncode == 130
    assert "Traceback" not in err


def test_cancel_job_and_batch(folder: Path) -> None:
    r = cli("cancel", "alpha", "--dir", str(folder))
    assert r.returncode == 0 and "cancel requested: alpha" in r.stdout
    job = StatusStore(folder).read("alpha")
    assert job is not None and job.cancel_requested  # what a running job's worker notices
    done = cli("cancel", "beta", "--dir", str(folder))
    assert done.returncode == 1 and "already completed" in done.stdout
    store = StatusStore(folder)
    store.update("p1", batch_id="b2")
    store.update("p2", batch_id="b2")
    batch = cli("cancel", "--batch", "b2", "--dir", str(folder))
    assert batch.returncode == 0 and "2 job(s) of batch b2 asked to stop" in batch.stdout
    assert {store.read(i).status for i in ("p1", "p2")} == {BatchStatus.CANCELLED}  # type: ignore[union-attr]
    unknown = cli("cancel", "ghost", "--dir", str(folder))
    assert unknown.returncode == 1 and "no job 'ghost'" in unknown.stderr
    no_batch = cli("cancel", "--batch", "nosuch", "--dir", str(folder))
    assert no_batch.returncode == 1 and "no batch 'nosuch'" in no_batch.stderr
    finished = cli("cancel", "--batch", "b2", "--dir", str(folder))  # cancelled above
    assert finished.returncode == 1 and "0 job(s) of batch b2" in finished.stdout


@pytest.mark.timeout(300)
def test_cancel_batch_from_another_process_during_its_start_starts_no_job_after_it(
    batch_locations: tuple[str, str], tmp_path: Path
) -> None:
    """The starter (a child process) has recorded a first chunk of its batch's jobs, not
    the rest, when ``cancel --batch`` runs (another process). The cancel sets the
    definition's cancel marker, so no job of the batch starts afterwards; it used to
    cancel only the records it found, and the starter went on to run the others."""
    batch_dir, status_dir = batch_locations
    with batch_paused_in_its_start(batch_dir, status_dir, tmp_path) as batch_id:
        location = [] if batch_dir == status_dir else ["--batch-dir", batch_dir]
        r = cli("cancel", "--batch", batch_id, "--dir", status_dir, *location)
        cancel_returned = utc_now()
        assert r.returncode == 0, r.stderr
        assert "not recorded yet will not start" in r.stdout, r.stdout
    assert_none_started_after(batch_dir, status_dir, batch_id, cancel_returned, tmp_path)


def test_cleanup(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    old = datetime.now(UTC) - timedelta(hours=30)
    store = StatusStore(folder, clock=lambda: old)
    store.update("old-done", status="completed")
    store.update("old-running", status="running")
    StatusStore(folder).update("new-done", status="completed")
    dry = cli("cleanup", "--older-than", "24h", "--dry-run", "--dir", str(folder))
    assert dry.returncode == 0
    assert dry.stdout.splitlines() == [
        "would remove old-done",
        "1 finished record(s) would be removed",
    ]
    assert (folder / "old-done.json").exists()
    real = cli("cleanup", "--older-than", "1d", "--dir", str(folder))
    assert "removed old-done" in real.stdout
    assert sorted(p.name for p in folder.glob("*.json")) == ["new-done.json", "old-running.json"]
    keep = cli("cleanup", "--keep", "0", "--dir", str(folder))
    assert "removed new-done" in keep.stdout
    nothing = cli("cleanup", "--dir", str(folder))
    assert nothing.returncode == 2 and "--older-than" in nothing.stderr
    bad = cli("cleanup", "--older-than", "soon", "--dir", str(folder))
    assert bad.returncode == 2 and "invalid duration 'soon'" in bad.stderr


def test_doctor(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    store = StatusStore(folder)
    store.update("fine")
    healthy = cli("doctor", "--dir", str(folder))
    assert healthy.returncode == 0, healthy.stdout
    assert f"[ok] file-system events: {NATIVE_BACKEND} backend" in healthy.stdout
    assert "all good" in healthy.stdout
    (folder / "junk.json").write_text("{")
    stale = folder / ".x.1-1.tmp"
    stale.write_text("{")
    stale_inside = folder / ".tmp" / ".y.2-2.tmp"  # where StatusStore's own temp files live
    stale_inside.write_text("{")
    past = datetime.now(UTC).timestamp() - 3600
    for path in (stale, stale_inside, folder / ".tmp"):
        os.utime(path, (past, past))
    store.update("orphan", status="running", owner="vm-that-is-gone:1",
                 heartbeat_at=datetime.now(UTC) - timedelta(hours=1))  # fmt: skip
    sick = cli("doctor", "--dir", str(folder))
    assert sick.returncode == 1
    assert "junk.json: not valid JSON" in sick.stdout
    assert "stale temp file .x.1-1.tmp" in sick.stdout
    assert "stale temp file .tmp/.y.2-2.tmp" in sick.stdout
    assert "stale temp file .tmp " not in sick.stdout  # the folder itself is not one
    assert "orphan (owner vm-that-is-gone:1)" in sick.stdout
    assert "3 problem(s) need attention" in sick.stdout
    missing = cli("doctor", "--dir", str(tmp_path / "nope"))
    assert missing.returncode == 1 and "does not exist" in missing.stdout


def test_module_and_console_script_agree(folder: Path) -> None:
    script = Path(sys.executable).with_name("statusbridge")
    if not script.exists():
        pytest.skip("console script not installed in this environment")
    a = subprocess.run([str(script), "ls", "--json", "--dir", str(folder)],
                       capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    b = cli("ls", "--json", "--dir", str(folder))
    assert a.returncode == b.returncode == 0
    assert json.loads(a.stdout) == json.loads(b.stdout)


def in_process(*args: str) -> tuple[int, str, str]:
    """The real command run in this process: (exit code, stdout, stderr with logged warnings).

    For a child that dropped privileges and so cannot exec this interpreter again.
    """
    out, err = io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(err)
    handler.setLevel(logging.WARNING)
    logger = logging.getLogger("statusbridge")
    logger.addHandler(handler)
    try:
        with contextlib.redirect_stderr(err):
            code = main(list(args), out=out)
    finally:
        logger.removeHandler(handler)
    return code, out.getvalue(), err.getvalue()


def tree_state(folder: Path) -> dict[str, tuple[int, ...]]:
    """Every entry under ``folder`` with its type, owner, size and times (not atime)."""
    state: dict[str, tuple[int, ...]] = {}
    for root, dirs, names in os.walk(folder):
        for name in [".", *dirs, *names]:
            path = Path(root, name)
            st = path.lstat()
            state[str(path.relative_to(folder))] = (
                st.st_mode, st.st_uid, st.st_size, st.st_mtime_ns, st.st_ctime_ns
            )  # fmt: skip
    return state


@pytest.fixture
def public_tmp() -> Iterator[Path]:
    """A folder that other users may enter (pytest's tmp_path is private to root here)."""
    path = Path(tempfile.mkdtemp(prefix="sb-public-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


READ_COMMANDS = [["ls"], ["ls", "--json"], ["show", "alpha"], ["watch", "--once"], ["doctor"]]


def test_read_commands_work_for_a_read_only_monitor(public_tmp: Path) -> None:
    folder = public_tmp / "status"
    store = StatusStore(folder, file_mode=0o644, dir_mode=0o755)  # readable by all
    store.update("alpha", status="running", progress=0.5, message="hello")
    (folder / ".tmp").chmod(0o700)  # the writers' temp folder stays private
    before = tree_state(folder)
    for args in READ_COMMANDS:  # as root first: imports are done before the child forks
        code, _, err = in_process(*args, "--dir", str(folder))
        assert (code, err) == (0, ""), args
    assert tree_state(folder) == before  # read commands write nothing, create nothing

    def monitor() -> dict[str, Any]:
        done: dict[str, Any] = {
            " ".join(args): in_process(*args, "--dir", str(folder)) for args in READ_COMMANDS
        }
        reader = StatusStore(folder)
        done["scan"] = sorted(reader.scan())
        done["read"] = reader.read("alpha").message  # type: ignore[union-attr]
        return done

    seen = run_as_nobody(monitor)
    assert tree_state(folder) == before
    assert seen["scan"] == ["alpha"] and seen["read"] == "hello"
    for args in READ_COMMANDS:
        code, out, err = seen[" ".join(args)]
        assert (code, err) == (0, ""), (args, out, err)
        assert "alpha" in out or args == ["doctor"]
    doctor_out = seen["doctor"][1]
    assert "read-only for this user" in doctor_out
    assert "not checked: .tmp/: Permission denied" in doctor_out


def test_an_unreadable_record_is_that_records_problem(public_tmp: Path) -> None:
    folder = public_tmp / "status"
    store = StatusStore(folder, file_mode=0o644, dir_mode=0o755)
    store.update("alpha", status="running", message="readable")
    store.update("secret", status="running")
    (folder / "secret.json").chmod(0o600)  # root's: nobody cannot open it
    args = [["ls"], ["ls", "--json"], ["show", "secret"], ["watch", "--once"]]
    args.append(["cancel", "--batch", "x"])
    for command in args:
        in_process(*command, "--dir", str(folder))  # imports done before the fork

    def monitor() -> dict[str, Any]:
        done: dict[str, Any] = {
            " ".join(command): in_process(*command, "--dir", str(folder)) for command in args
        }
        reader = StatusStore(folder)
        done["scan"] = sorted(reader.scan())
        done["report"] = reader.scan_report().invalid
        with StatusCache(folder) as cache:
            done["cache"] = (sorted(cache.snapshot()), dict(cache.health().invalid_files))
        return done

    seen = run_as_nobody(monitor)
    reason = "cannot read: Permission denied"
    assert seen["scan"] == ["alpha"]  # was PermissionError
    assert seen["report"] == {"secret.json": reason}
    assert seen["cache"] == (["alpha"], {"secret.json": reason})
    warning = f"statusbridge: warning: secret.json: {reason}\n"
    code, out, err = seen["ls"]
    assert (code, err) == (0, warning) and "alpha" in out  # was exit 2
    code, out, err = seen["ls --json"]
    assert (code, err) == (0, warning) and [d["id"] for d in json.loads(out)] == ["alpha"]
    code, out, err = seen["show secret"]
    assert (code, out, err) == (1, "", f"statusbridge: error: secret.json: {reason}\n")
    code, out, err = seen["watch --once"]
    assert code == 0 and f"! secret.json: {reason}" in out.splitlines()
    code, out, err = seen["cancel --batch x"]
    assert code == 1 and err.startswith(warning)  # warned, then: no readable job of batch x
    assert err.splitlines()[1].startswith("statusbridge: error: no batch 'x'")


def test_ls_names_undecodable_records_on_stderr(folder: Path) -> None:
    (folder / "broken.json").write_text("{")
    (folder / "notes.txt").write_text("not a record: doctor reports it, ls does not")
    r = cli("ls", "--dir", str(folder))
    assert r.returncode == 0
    assert r.stderr == (
        "statusbridge: warning: broken.json: not valid JSON: Expecting property name "
        "enclosed in double quotes at line 1 column 2\n"
    )
    assert "alpha" in r.stdout and "broken" not in r.stdout
    watch = cli("watch", "--once", "--dir", str(folder))
    assert "! broken.json: not valid JSON" in watch.stdout


# ESC (escape sequences), BEL, backspace, carriage return, DEL, a C1 CSI, and bidi overrides.
HOSTILE = "\x1b[2J\x1b]0;owned\x07\x08\r\x7f\x9b31m\u202eevil\u2066\u200f"
FORBIDDEN = set("\x1b\x07\x08\r\x7f\x9b\u202e\u2066\u200f")


def test_control_characters_never_reach_the_terminal(tmp_path: Path) -> None:
    folder = tmp_path / "status"
    store = StatusStore(folder)
    store.update("msg", status="running", message=f"msg {HOSTILE}", batch_id="b1")
    store.update("err", status="failed", error_message=f"err {HOSTILE}", batch_id="b2")
    store.update("gone", status="running", owner=f"vm{HOSTILE}:1",
                 heartbeat_at=datetime.now(UTC) - timedelta(hours=1))  # fmt: skip
    (folder / f"\x1b[2J{HOSTILE}.json").write_text("{}")  # a foreign file's name
    (folder / "bad.json").write_text(json.dumps({"schema": 1, "id": "bad", "status": 3}))
    human = {
        "ls": cli("ls", "--dir", str(folder)),
        "watch": cli("watch", "--once", "--dir", str(folder)),
        "doctor": cli("doctor", "--dir", str(folder)),
        "cancel": cli("cancel", "--batch", HOSTILE, "--dir", str(folder)),
        "error": cli("show", "x", "--dir", str(folder / HOSTILE)),
    }
    for name, r in human.items():
        shown = r.stdout + r.stderr
        assert not FORBIDDEN & set(shown), (name, shown)
    assert "msg \\x1b[2J\\x1b]0;owned\\x07\\x08" in human["ls"].stdout  # shown, visibly
    assert "err \\x1b[2J" in human["watch"].stdout
    assert "gone (owner vm\\x1b[2J\\x1b]0;owned\\x07" in human["doctor"].stdout
    assert ".json: not a status file" in human["doctor"].stdout
    assert human["error"].returncode == 2 and "\\x1b[2J" in human["error"].stderr
    exact = {
        "ls --json": cli("ls", "--json", "--dir", str(folder)),
        "show": cli("show", "msg", "--dir", str(folder)),
    }
    for name, r in exact.items():
        assert r.returncode == 0, r.stderr
        assert not FORBIDDEN & set(r.stdout), name  # escaped as JSON does...
    docs = {d["id"]: d for d in json.loads(exact["ls --json"].stdout)}
    assert docs["msg"]["message"] == f"msg {HOSTILE}"  # ...so the strings stay exact
    assert docs["err"]["error_message"] == f"err {HOSTILE}"
    assert docs["gone"]["owner"] == f"vm{HOSTILE}:1"
    assert json.loads(exact["show"].stdout)["message"] == f"msg {HOSTILE}"


# -- the live view, in a real terminal (tmux) ----------------------------------------------------

TMUX = shutil.which("tmux") or ""


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    if not TMUX:
        if os.environ.get("CI"):
            pytest.fail("tmux is missing (.ci/run installs it)")
        pytest.skip("tmux is not installed (apt-get install tmux)")
    socket = f"sbtest-{os.getpid()}-{tmp_path.name}"
    try:
        yield socket, tmp_path
    finally:
        subprocess.run([TMUX, "-L", socket, "kill-server"], capture_output=True, check=False)


def start_in_tmux(socket: str, command: list[str], env: dict[str, str]) -> None:
    """Run ``command`` in a new 80x24 pane, with this environment plus ``env``.

    The pane must measure itself: a shell on a terminal exports COLUMNS and LINES (readline
    does), and a program that sees them draws that wide whatever the pane is. The tmux server
    is started here (its own socket), so its environment is the one given to it.
    """
    pane_env = {k: v for k, v in child_env(**env).items() if k not in ("COLUMNS", "LINES")}
    subprocess.run(
        [TMUX, "-L", socket, "new-session", "-d", "-x", "80", "-y", "24",
         f"{shlex.join(command)}; sleep 60"],
        check=True, env=pane_env,
    )  # fmt: skip


def screen(socket: str, *flags: str) -> str:
    r = subprocess.run([TMUX, "-L", socket, "capture-pane", "-p", *flags],
                       capture_output=True, text=True, check=True)  # fmt: skip
    return r.stdout


@pytest.mark.parametrize("no_color", [False, True])
def test_watch_redraws_in_place_and_fits_80x24(tmux: tuple[str, Path], no_color: bool) -> None:
    socket, tmp_path = tmux
    folder = tmp_path / "status"
    store = StatusStore(folder)
    for i in range(36):
        store.update(f"done-{i:03d}", batch_id="b", status="completed")
    for i in range(30):
        store.update(f"busy-{i:03d}", batch_id="b", status="running", progress=0.1)
    store.update("broke", batch_id="b", status="failed", error_message="ValueError: bad")
    env = {"NO_COLOR": "1"} if no_color else {}
    start_in_tmux(socket, [sys.executable, "-m", "statusbridge", "watch", "--dir", str(folder)],
                  {"TERM": "xterm-256color", **env})  # fmt: skip
    wait_until(lambda: "busy-000" in screen(socket), 60, "the first frame")
    for step in range(2, 10):  # redraws on changes
        store.update("busy-000", progress=step / 10)
        wait_until(lambda s=step: f"{s * 10}%" in screen(socket).split("busy-000")[1][:40], 60)  # type: ignore[misc]
    shown = screen(socket).splitlines()
    assert shown[0].startswith("statusbridge watch")  # the header never scrolls away
    assert shown[1].startswith("67 jobs: 30 running  0 pending  36 completed  1 failed")
    assert all(len(line) <= 80 for line in shown)
    rows = [line.split()[0] for line in shown[4:] if line.strip()]
    assert rows[0] == "busy-000" and all(r.startswith("busy-") for r in rows[:-1])  # active first
    assert rows[-1] == "…" and "and 12 more active job(s)" in shown[-1] + "".join(shown[-3:])
    # Redrawn in place: nothing piled up in the scrollback (it used to hold every frame).
    assert len(screen(socket, "-S", "-").splitlines()) <= 24
    coloured = "\x1b[38" in screen(socket, "-e")
    assert coloured is not no_color


def test_watch_ends_on_ctrl_c_with_its_last_frame_shown_once(tmux: tuple[str, Path]) -> None:
    socket, tmp_path = tmux
    folder = tmp_path / "status"
    store = StatusStore(folder)
    for i in range(3):
        store.update(f"job-{i}", status="completed", message="x" * 200)  # full-width rows
    start_in_tmux(socket, [sys.executable, "-m", "statusbridge", "watch", "--dir", str(folder)],
                  {"TERM": "xterm-256color"})  # fmt: skip
    wait_until(lambda: "job-2" in screen(socket), 60, "the first frame")
    subprocess.run([TMUX, "-L", socket, "send-keys", "C-c"], check=True)

    def ended() -> bool:
        r = subprocess.run([TMUX, "-L", socket, "display", "-p", "#{pane_current_command}"],
                           capture_output=True, text=True, check=True)  # fmt: skip
        return r.stdout.strip() == "sleep"  # watch has exited; the pane's `sleep 60` runs

    wait_until(ended, 60, "watch to end on Ctrl-C")
    everything = screen(socket, "-S", "-")
    # Before: the header twice (Ctrl-C's echo wrapped the last line; rich redrew one line low).
    assert everything.count("statusbridge watch") == 1, everything
    assert "^C" not in everything and "Traceback" not in everything


def test_watch_state_filter(tmux: tuple[str, Path]) -> None:
    socket, tmp_path = tmux
    folder = tmp_path / "status"
    store = StatusStore(folder)
    store.update("ok", status="completed")
    store.update("bad", status="failed", error_message="RuntimeError: the whole message")
    store.update("busy", status="running")
    start_in_tmux(socket, [sys.executable, "-m", "statusbridge", "watch", "--state", "failed",
                           "--dir", str(folder)], {})  # fmt: skip
    wait_until(lambda: "bad" in screen(socket), 60, "the first frame")
    shown = screen(socket)
    assert "RuntimeError: the whole message" in shown
    assert "busy " not in shown and "\nok " not in shown
    assert "· failed" in shown.splitlines()[0]  # the filter is named in the header


def test_live_view_draws_active_jobs_and_a_bounded_tail_of_finished_ones(tmp_path: Path) -> None:
    from rich.console import Console

    from statusbridge.cli._live import RECENT_FINISHED, JobIndex, render

    store = StatusStore(tmp_path)
    for i in range(300):
        store.update(f"old-{i:03d}", status="completed")
    store.update("slow", status="running", progress=0.5, message="x" * 500)
    store.update("next", status="pending")
    with StatusCache(tmp_path) as cache:
        index = JobIndex(None, ())
        index.load(cache.snapshot())
        assert set(index.active) == {"slow", "next"}
        assert len(index.finished) == RECENT_FINISHED  # not 300: a redraw's work is bounded
        store.update("slow", status="failed", error_message="boom")
        changed = wait_until(lambda: cache.snapshot().get("slow").status.value == "failed", 30)  # type: ignore[union-attr]
        assert changed
        index.apply(cache.snapshot(), {"slow"})
        assert set(index.active) == {"next"} and "slow" in index.finished
        console = Console(file=io.StringIO(), width=80, height=24, color_system=None)
        frame = render(cache.snapshot(), index, folder=str(tmp_path), now=datetime.now(UTC),
                       height=23, width=80, invalid={})  # fmt: skip
        console.print(frame)
        lines = console.file.getvalue().splitlines()  # type: ignore[attr-defined]
    assert len(lines) <= 23 and all(len(line) <= 80 for line in lines)
    assert lines[1].startswith("302 jobs: 0 running  1 pending  300 completed  1 failed")
    rows = [line.split()[0] for line in lines[4:]]
    assert rows[:2] == ["next", "slow"]  # active first, then the latest finished
