"""Real services for the test run, started before Django reads its settings.

Loaded as a pytest plugin (``-p tests.support.services``) so that REDIS_URL and the
other variables are in place when pytest-django imports ``portal.settings``.
Each run gets its own redis-server on a free port, so tests never touch the
Redis of a running ``make run``.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support import leftovers

ROOT = Path(__file__).resolve().parents[2]
# scripts/test gives each pass (SQLite, PostgreSQL) its own folder.
ARTIFACTS = Path(os.environ.get("LATTICE_TEST_ARTIFACTS") or ROOT / "test-artifacts")
ARTIFACTS.mkdir(parents=True, exist_ok=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing answered on {host}:{port} within {timeout} s")


class Process:
    """A child process whose output goes to a log kept as a test artefact."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], new_session: bool = False):
        ARTIFACTS.mkdir(exist_ok=True)
        self.log_path = ARTIFACTS / f"{name}.log"
        self.log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=new_session
        )

    def wait_for_log(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log_path.read_text(errors="replace"):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"{self.log_path.name}: no {text!r}:\n{self.log_path.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL, as a crash: no clean-up of its own runs."""
        self.proc.kill()
        self.proc.wait()
        self.log.close()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def redis_server_command(port: int, server: str = "redis-server") -> list[str]:
    """A throw-away Redis on loopback: nothing saved to disk."""
    return [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]


class RunRedis:
    """The run's own redis-server, which the chaos suite may kill -9 and start again.

    Throw-away by default; ``make_persistent`` turns the append-only file on
    (as a production Redis keeps the queue), and a restart then loads it.
    """

    def __init__(self) -> None:
        self.server = shutil.which("redis-server")
        if self.server is None:
            raise RuntimeError(
                "redis-server is not installed: run `make test` (it installs it) or apt-get install redis-server"
            )
        self.port = free_port()
        self.workdir = tempfile.mkdtemp(prefix="lattice-test-redis-")
        self.persistent = False
        # As under `make run` (scripts/redis): the default user has the password in
        # var/redis-password, only its hash written down, none in the process list.
        password_file = ROOT / "var" / "redis-password"
        if not password_file.exists():
            raise RuntimeError("var/redis-password is missing: run scripts/setup test")
        self.password = password_file.read_text().strip()
        self.acl = Path(self.workdir) / "users.acl"
        self.acl.write_text(
            f"user default on #{hashlib.sha256(self.password.encode()).hexdigest()} ~* &* +@all\n"
        )
        self.url = f"redis://:{self.password}@127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        argv = [
            *redis_server_command(self.port, self.server),
            "--dir",
            self.workdir,
            "--aclfile",
            str(self.acl),
        ]
        if self.persistent:
            argv += ["--appendonly", "yes", "--appendfsync", "everysec"]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
        wait_for_port(self.port)

    def make_persistent(self) -> None:
        """Keep every write in the append-only file from now on, as a restart will read it."""
        import redis

        client = redis.Redis.from_url(self.url)
        client.config_set("appendonly", "yes")
        deadline = time.monotonic() + 30
        while (
            client.info("persistence")["aof_rewrite_in_progress"]
            or client.info("persistence")["aof_rewrite_scheduled"]
        ):
            if time.monotonic() > deadline:
                raise RuntimeError("the test Redis did not write its append-only file within 30 s")
            time.sleep(0.05)
        client.close()
        self.persistent = True

    def kill(self) -> None:
        """SIGKILL, as a crash: nothing is flushed but what the append-only file already has."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)
        shutil.rmtree(self.workdir, ignore_errors=True)


def _start_redis() -> RunRedis:
    redis_server = RunRedis()
    atexit.register(redis_server.close)
    return redis_server


# None when LATTICE_TEST_REDIS_URL names a Redis of someone else's.
REDIS: RunRedis | None = None if os.environ.get("LATTICE_TEST_REDIS_URL") else _start_redis()
os.environ["REDIS_URL"] = REDIS.url if REDIS else os.environ["LATTICE_TEST_REDIS_URL"]
os.environ.setdefault("LATTICE_ENGINE_PREFIX", leftovers.run_prefix())
leftovers.remove_stale()
if os.environ["LATTICE_ENGINE_PREFIX"] == leftovers.run_prefix():
    atexit.register(leftovers.remove_everything_under, os.environ["LATTICE_ENGINE_PREFIX"])
os.environ.setdefault("LATTICE_FAST_PASSWORD_HASHING", "1")
# Short enough that the never-ready test is quick, long enough for a loaded CI machine.
os.environ.setdefault("LATTICE_SPAWN_TIMEOUT", "20")
os.environ.setdefault("LATTICE_VAR_DIR", str(ROOT / "var" / "test"))
# The unprivileged display proxy (tests/test_display_proxy_as_run.py) must pass
# through every folder above the display sockets: a checkout in a private
# folder (/root/…) would hide them, so this run's sockets then live in /tmp.
if not all(folder.stat().st_mode & 0o001 for folder in (ROOT, *ROOT.parents)):
    _displays = tempfile.mkdtemp(prefix="lattice-test-displays-")
    os.environ.setdefault("LATTICE_DISPLAY_SOCKET_DIR", _displays)
    atexit.register(shutil.rmtree, _displays, True)
# Backups of this run's made-up users go to a folder of this run's own.
_object_storage = tempfile.mkdtemp(prefix="lattice-test-objects-")
os.environ.setdefault("LATTICE_OBJECT_STORAGE", _object_storage)
atexit.register(shutil.rmtree, _object_storage, True)
# One database file per run, so two runs at once (a developer's and make test)
# never share, or delete, each other's: var/test/test-<pid>.sqlite3 (with its
# -wal and -shm), left behind for good once <pid> is gone.
DATABASES = ROOT / "var" / "test"


def remove_stale_databases(folder: Path = DATABASES) -> None:
    """The database files of runs that are no longer alive."""
    for path in folder.glob("test-*.sqlite3*"):
        pid = path.name.removeprefix("test-").split(".", 1)[0]
        if pid.isdigit() and not leftovers.alive(int(pid)):
            path.unlink(missing_ok=True)


DATABASES.mkdir(parents=True, exist_ok=True)
remove_stale_databases()
os.environ.setdefault("LATTICE_TEST_DB", str(DATABASES / f"test-{os.getpid()}.sqlite3"))
# pytest-django removes an old test database file but not SQLite's -wal and
# -shm beside it; a new database next to an old WAL is inconsistent between
# the processes that share it (this run's worker and web server).
for leftover in Path(os.environ["LATTICE_TEST_DB"]).parent.glob(
    Path(os.environ["LATTICE_TEST_DB"]).name + "*"
):
    leftover.unlink()
