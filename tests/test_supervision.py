"""`make run` under supervision, with real processes: a crashed process is
started again while the others keep running, Redis keeps its queue across a
restart, a second `make run` finds the first, and one after a killed
supervisor takes over what it left running.

The stack runs on ports, a var folder and an engine prefix of its own, so it
never touches the developer's `make run`, database or workspaces.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import redis

from tests.support.services import ROOT, Process, free_port, wait_for_port

pytestmark = pytest.mark.docker  # scripts/setup and preflight talk to the engine
PROGRAMS = ("redis", "web", "worker", "captures", "upkeep", "beat", "display")


class Stack:
    """One `make run`, started in a session of its own (as a terminal would hold it)."""

    def __init__(self, base: Path):
        self.var = base / "var"
        self.http_port, self.display_port, self.redis_port = free_port(), free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "LATTICE_SQLITE_PATH")}
        env.update(
            LATTICE_VAR_DIR=str(self.var),
            PORT=str(self.http_port),
            LATTICE_DISPLAY_PROXY_PORT=str(self.display_port),
            REDIS_PORT=str(self.redis_port),
            LATTICE_DISPLAY_SOCKET_DIR=str(base / "displays"),
            # No workspace of this run's or the developer's is this stack's to reconcile.
            LATTICE_ENGINE_PREFIX=f"latticesup{os.getpid()}",
        )
        self.env = env
        self.runs: list[Process] = []

    def start(self) -> Process:
        run = Process(f"make-run-{len(self.runs)}", ["make", "run"], self.env, new_session=True)
        self.runs.append(run)
        return run

    def pids(self) -> dict[str, int]:
        found = {}
        for name in PROGRAMS:
            path = self.var / "run" / "programs" / f"{name}.pid"
            if path.exists() and path.read_text().strip():
                found[name] = int(path.read_text().split()[0])
        return found

    def wait_until_up(
        self, run: Process, not_pids: dict[str, int] | None = None, timeout: float = 90
    ) -> dict:
        """Every program running (under pids other than ``not_pids``'s), the web answering."""
        deadline = time.monotonic() + timeout
        while True:
            pids = self.pids()
            if len(pids) == len(PROGRAMS) and all(
                alive(pid) and pid != (not_pids or {}).get(name) for name, pid in pids.items()
            ):
                break
            assert time.monotonic() < deadline and run.proc.poll() is None, run.log_path.read_text()[-4000:]
            time.sleep(0.2)
        wait_for_port(self.http_port, timeout=max(1, deadline - time.monotonic()))
        return pids

    def redis(self) -> redis.Redis:
        password = (ROOT / "var" / "redis-password").read_text().strip()
        return redis.Redis(port=self.redis_port, password=password, socket_timeout=2)

    def interrupt(self, run: Process) -> None:
        """Ctrl-C in its terminal: SIGINT to the foreground process group."""
        os.killpg(run.proc.pid, signal.SIGINT)
        run.proc.wait(40)

    def stop_everything(self) -> None:
        for run in self.runs:
            if run.proc.poll() is None:
                self.interrupt(run)
            run.log.close()
        subprocess.run([str(ROOT / "scripts" / "supervise"), "leftovers"], env=self.env, check=False)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def group_members(pgid: int) -> list[int]:
    """Live processes in the process group ``pgid`` (each program leads one)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(stat.parent.name))
    return members


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    stack = Stack(tmp_path_factory.mktemp("supervision"))
    first = stack.start()
    stack.wait_until_up(first)
    yield stack
    stack.stop_everything()


def test_a_process_killed_is_started_again_and_the_others_keep_running(stack):
    run = stack.runs[-1]
    before = stack.pids()
    os.kill(before["worker"], signal.SIGKILL)
    after = stack.wait_until_up(run, not_pids={"worker": before["worker"]})
    assert {n: p for n, p in after.items() if n != "worker"} == {
        n: p for n, p in before.items() if n != "worker"
    }
    # Said in the terminal, and the new worker's own output there with its name.
    log = run.log_path.read_text()
    assert "exited: worker (terminated by SIGKILL; not expected)" in log
    assert f"spawned: 'worker' with pid {after['worker']}" in log
    deadline = time.monotonic() + 60
    while run.log_path.read_text().count("worker   | ") <= log.count("worker   | "):
        assert time.monotonic() < deadline, run.log_path.read_text()[-3000:]
        time.sleep(0.2)


def test_redis_killed_keeps_its_queue(stack):
    run = stack.runs[-1]
    stack.redis().rpush("supervision-test-queue", "queued work")
    time.sleep(1.2)  # appendfsync everysec
    before = stack.pids()
    os.kill(before["redis"], signal.SIGKILL)
    stack.wait_until_up(run, not_pids={"redis": before["redis"]})
    deadline = time.monotonic() + 15
    while True:
        try:
            assert stack.redis().lrange("supervision-test-queue", 0, -1) == [b"queued work"]
            break
        except redis.exceptions.ConnectionError:
            assert time.monotonic() < deadline
            time.sleep(0.2)


def test_a_second_make_run_says_the_first_is_running_and_leaves_it_alone(stack):
    before = stack.pids()
    second = subprocess.run(
        ["make", "run"], cwd=ROOT, env=stack.env, capture_output=True, text=True, timeout=60, check=False
    )
    assert second.returncode != 0
    assert "already running" in second.stderr
    assert f"http://127.0.0.1:{stack.http_port}/" in second.stderr
    assert "make stop" in second.stderr
    assert stack.pids() == before
    assert all(alive(pid) for pid in before.values())
    wait_for_port(stack.http_port, timeout=1)


def test_after_the_supervisor_is_killed_make_run_takes_over_what_it_left(stack):
    old = stack.runs[-1]
    supervisor = int((stack.var / "run" / "supervisord.pid").read_text())
    left = stack.pids()
    os.kill(supervisor, signal.SIGKILL)
    old.proc.wait(10)
    assert all(alive(pid) for pid in left.values())  # its processes outlive it, holding the ports
    new = stack.start()
    fresh = stack.wait_until_up(new, not_pids=left)
    log = new.log_path.read_text()
    for name, pid in left.items():
        assert f"Stopping {name} (pid {pid})" in log
        assert not group_members(pid), f"{name}'s group is still running"
    assert not set(fresh.values()) & set(left.values())
    # Ctrl-C stops everything: no program and nothing any of them started is left.
    stack.interrupt(new)
    for name, pid in fresh.items():
        assert not group_members(pid), f"{name} (pid {pid}) or its children left running after Ctrl-C"
