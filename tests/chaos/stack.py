"""Lattice's processes as `make run` starts them, each of which a test may kill -9 and start again.

The harness starts and restarts them itself (no supervisor), so it knows to
the moment when a killed process is back: the worker once Celery says
"ready.", beat once it says it is starting, the web, the display proxy and
Redis once their port answers. Redis is the run's own (tests/support/services.py),
made persistent first: a production Redis keeps its queue across a crash.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path

from tests.conftest import TEST_ORIGIN, start_display_proxy, start_web, start_worker
from tests.support import services
from tests.support.services import Process, free_port

VICTIMS = ("worker", "captures", "upkeep", "web", "display", "beat", "redis")


class Stack:
    """Redis, the web, the three workers, beat and the display proxy, on the test database."""

    def __init__(self, env: dict[str, str], folder: Path):
        if services.REDIS is None:
            raise RuntimeError("the chaos suite kills the run's own Redis: unset LATTICE_TEST_REDIS_URL")
        self.redis = services.REDIS
        self.redis.make_persistent()
        self.web_port = free_port()
        self.proxy_port = free_port()
        self.web_url = f"http://127.0.0.1:{self.web_port}"
        self.proxy_url = f"ws://127.0.0.1:{self.proxy_port}/"
        self.env = dict(env, LATTICE_DISPLAY_PROXY_URL=self.proxy_url)
        self.schedule = folder / "celerybeat-schedule"
        self.processes: dict[str, Process] = {}
        self.incarnations: Counter[str] = Counter()

    def start_all(self) -> None:
        for name in ("display", "web", "worker", "captures", "upkeep", "beat"):
            self.start(name)

    def start(self, name: str) -> float:
        """Start one process and wait until it serves; the moment (monotonic) it does."""
        self.incarnations[name] += 1
        log = f"chaos-{name}-{self.incarnations[name]}"
        if name == "redis":
            self.redis.start()
        elif name == "worker":
            # The Procfile's two workers, with their pools and queues.
            self.processes[name] = start_worker(
                log, self.env, "--concurrency", "4", "--queues", "celery", "--hostname", "chaos@%h"
            )
        elif name == "captures":
            self.processes[name] = start_worker(
                log,
                self.env,
                *("--pool", "prefork", "--concurrency", "2", "--queues", "captures"),
                *("--hostname", "chaos-captures@%h"),
            )
        elif name == "upkeep":
            self.processes[name] = start_worker(
                log, self.env, "--concurrency", "2", "--queues", "upkeep", "--hostname", "chaos-upkeep@%h"
            )
        elif name == "web":
            self.processes[name] = start_web(log, self.web_port, self.env)
        elif name == "display":
            self.processes[name], _ = start_display_proxy(
                log, f"{TEST_ORIGIN} {self.web_url}", port=self.proxy_port
            )
        elif name == "beat":
            schedule = ["--schedule", str(self.schedule)]
            beat = Process(
                log,
                [sys.executable, "-m", "celery", "-A", "portal", "beat", "-l", "INFO", *schedule],
                self.env,
            )
            beat.wait_for_log("beat: Starting...")
            self.processes[name] = beat
        else:
            raise ValueError(f"no process {name!r}; one of {', '.join(VICTIMS)}")
        return time.monotonic()

    def kill(self, name: str) -> float:
        """SIGKILL one process, as a crash; the moment (monotonic) it died."""
        if name == "redis":
            self.redis.kill()
        else:
            self.processes.pop(name).kill()
        return time.monotonic()

    def exited(self) -> list[str]:
        """Processes that ended on their own (nobody killed them): a crash the harness did not cause."""
        gone = [
            f"{name} exited by itself (code {process.proc.returncode}):\n{self.log_tail(name, 15)}"
            for name, process in self.processes.items()
            if process.proc.poll() is not None
        ]
        if self.redis.proc is not None and self.redis.proc.poll() is not None:
            gone.append(f"redis exited by itself (code {self.redis.proc.returncode})")
        return gone

    def restart_crashed(self) -> list[str]:
        """Start again what ended on its own, as make run's supervisor (and systemd) does; what it was.

        One such crash is known and expected: a Redis killed under a worker
        holding unacknowledged messages makes Celery's worker exit
        ("Unrecoverable error: AttributeError ... 'hostname'" in kombu's
        restore_unacked), and its supervisor starts it again.
        """
        crashed = [name for name, process in self.processes.items() if process.proc.poll() is not None]
        said = []
        for name in crashed:
            said.append(
                f"{name} exited by itself (code {self.processes[name].proc.returncode}):\n{self.log_tail(name, 40)}"
            )
            self.start(name)
        return said

    def log_tail(self, name: str, lines: int = 40) -> str:
        """The end of the current incarnation's log (for a failure's message)."""
        process = self.processes.get(name)
        if process is None:
            return ""
        text = process.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop_all(self) -> None:
        for process in self.processes.values():
            process.stop()
        self.processes.clear()
        if self.redis.proc is None or self.redis.proc.poll() is not None:
            self.redis.start()  # the rest of the run still uses it
