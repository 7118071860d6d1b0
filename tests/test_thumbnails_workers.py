"""Captures cannot starve launches: the Procfile's two workers, as they run.

The captures worker is stuck (stopped with SIGSTOP, as a worker whose every
thread waits on a display would be), thumbnails pile up in its queue, and a
workspace start still goes through the other worker at once.

Both workers use a Redis database of their own as broker, so the test run's
shared worker (which serves every queue) cannot take their tasks.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
import time

import pytest
import redis
from django.conf import settings

from portal.celery import app
from tests.conftest import _child_env
from tests.support.e2e import wait_for_state
from tests.support.services import Process
from workspaces import tasks
from workspaces.models import Image
from workspaces.services import lifecycle

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.docker]


def procfile_celery(name: str) -> list[str]:
    """The Procfile's command for one Celery worker, run with this Python, under a test hostname."""
    for line in (settings.BASE_DIR / "Procfile").read_text().splitlines():
        if line.startswith(f"{name}:"):
            words = shlex.split(line.partition("exec ")[2])
            assert words[:3] == ["celery", "-A", "portal"], line
            words[words.index("--hostname") + 1] = f"procfile-{name}@%h"
            return [sys.executable, "-m", *words, "--without-gossip", "--without-mingle"]
    raise AssertionError(f"the Procfile has no {name!r} process")


@pytest.fixture
def broker() -> str:
    url = settings.REDIS_URL.rsplit("/", 1)[0] + "/9"
    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture
def procfile_workers(engine, broker):
    env = _child_env(REDIS_URL=broker)
    workers = {
        name: Process(f"procfile-{name}", procfile_celery(name), env) for name in ("worker", "captures")
    }
    try:
        for worker in workers.values():
            worker.wait_for_log("ready.", timeout=60)
        yield workers
    finally:
        for worker in workers.values():
            os.kill(worker.proc.pid, signal.SIGCONT)
            worker.stop()


def test_a_start_goes_through_while_the_captures_worker_is_stuck(procfile_workers, broker, owner):
    os.kill(procfile_workers["captures"].proc.pid, signal.SIGSTOP)
    desktop = Image.objects.get(slug="desktop")
    with app.connection_for_write(broker) as connection:
        for _ in range(20):
            tasks.capture_thumbnail.apply_async((1,), connection=connection)
        workspace = lifecycle.create_workspace(owner, desktop, [])
        started = time.monotonic()
        tasks.spawn_workspace.apply_async((workspace.pk,), connection=connection)

    ws = wait_for_state(workspace.pk, {"running", "failed"}, timeout=60)
    assert ws.state == "running", ws.message
    assert time.monotonic() - started < 30
    # The captures wait in their own queue (the stuck worker may hold the one
    # its pending fetch took); the start's worker received none of them.
    assert redis.Redis.from_url(broker).llen("captures") >= 19
    assert "capture_thumbnail[" not in procfile_workers["worker"].log_path.read_text()
    assert "spawn_workspace[" in procfile_workers["worker"].log_path.read_text()
