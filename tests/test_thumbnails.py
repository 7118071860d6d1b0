"""The class grid's pictures: taken by the worker, served from Redis, at most one capture at a time."""

from __future__ import annotations

import time

import pytest
from django.conf import settings as site

from tests.test_rfb_client import drip_forever, fake_server, handshake, in_thread  # noqa: F401  (a fixture)
from workspaces import tasks
from workspaces.display import rfb
from workspaces.models import Workspace
from workspaces.services import thumbnails
from workspaces.services.lifecycle import WrongState


@pytest.fixture
def captures(monkeypatch):
    asked: list[int] = []
    monkeypatch.setattr(tasks.capture_thumbnail, "delay", asked.append)
    for key in ("PICTURE", "CAPTURING"):
        thumbnails.redis_client().delete(getattr(thumbnails, key) + "41")
    return asked


def test_a_current_picture_is_served_without_a_capture(captures):
    thumbnails.store(41, b"png-now")
    assert thumbnails.picture(41) == b"png-now"
    assert captures == []


def test_an_old_picture_is_served_at_once_and_one_capture_follows(captures, monkeypatch):
    thumbnails.store(41, b"png-old")
    later = thumbnails.time.time() + thumbnails.MAX_AGE + 1
    monkeypatch.setattr(thumbnails.time, "time", lambda: later)
    # Three tabs ask at once: each gets the old picture, one capture is queued.
    assert [thumbnails.picture(41) for _ in range(3)] == [b"png-old"] * 3
    assert captures == [41]
    thumbnails.captured(41)  # the worker is done: the next stale ask may capture again
    thumbnails.picture(41)
    assert captures == [41, 41]


def test_no_picture_yet_waits_briefly_then_says_none(captures):
    assert thumbnails.picture(41, wait=0.3) is None
    assert captures == [41]


# -- where captures run -------------------------------------------------------------


def procfile_queues() -> dict[str, tuple[str, str]]:
    """Each Celery worker of the Procfile: its queues and its pool."""
    workers = {}
    for line in (site.BASE_DIR / "Procfile").read_text().splitlines():
        name, _, command = line.partition(":")
        if " worker " in command:
            words = command.split()
            workers[name] = (words[words.index("--queues") + 1], words[words.index("--pool") + 1])
    return workers


def test_captures_run_in_their_own_queue_never_in_front_of_a_start():
    from portal.celery import app

    def queue(task_name: str) -> str:
        return app.amqp.router.route({}, task_name)["queue"].name

    assert queue(tasks.capture_thumbnail.name) == "captures"
    # The name stays what it was: captures queued before an upgrade still run.
    assert tasks.capture_thumbnail.name == "workspaces.tasks.workspace.capture_thumbnail"
    # Reconcile has its own queue and worker: it must run while a broadcast's starts
    # hold every thread of the main worker.
    assert queue(tasks.reconcile.name) == "upkeep"
    others = [
        name
        for name in app.tasks
        if name.startswith("workspaces.") and "capture" not in name and name != tasks.reconcile.name
    ]
    assert "workspaces.tasks.workspace.spawn_workspace" in others
    assert {name: queue(name) for name in others} == {name: "celery" for name in others}
    # Separate workers: the one that starts workspaces never takes a capture;
    # the captures' one has a process pool, which enforces their time limits.
    assert procfile_queues() == {
        "worker": ("celery", "threads"),
        "captures": ("captures", "prefork"),
        "upkeep": ("upkeep", "threads"),
    }
    assert tasks.capture_thumbnail.soft_time_limit == site.LATTICE_CAPTURE_DEADLINE + 5
    assert tasks.capture_thumbnail.time_limit == site.LATTICE_CAPTURE_DEADLINE + 10


# -- a capture of a hostile display ------------------------------------------------------


@pytest.fixture
def display(fake_server, monkeypatch):  # noqa: F811  (the imported fixture)
    """A workspace whose display is a fake server doing ``behaviour``.

    The connect itself (sockets.open_display: the path and the peer
    checked) is tested with the display proxy; here it hands over the fake's socket.
    """

    def make(behaviour) -> Workspace:
        sock = fake_server(behaviour)
        monkeypatch.setattr(rfb, "open_display", lambda target, timeout: sock)
        endpoint = {"path": "/run/lattice/displays/ws/vnc.sock", "container_id": "c" * 64, "server_pid": 42}
        return Workspace(engine_state={"endpoint": endpoint}, vnc_view_password="view")

    return make


def test_a_capture_ends_within_its_deadline_whatever_the_display_sends(display, settings):
    settings.LATTICE_CAPTURE_DEADLINE = 1.0
    workspace = display(drip_forever)
    started = time.monotonic()
    thread, outcome = in_thread(lambda: thumbnails.capture(workspace))
    thread.join(timeout=8)
    assert not thread.is_alive(), "the capture still ran after 8 s"
    assert isinstance(outcome[0], WrongState), outcome
    assert "did not answer in time (within 1 s)" in str(outcome[0])
    assert time.monotonic() - started < 1.6


def test_a_capture_refuses_a_screen_bigger_than_the_sites_maximum(display, settings):
    settings.LATTICE_MAX_SCREEN = (1280, 800)
    workspace = display(lambda conn: (handshake(conn, 1920, 1080), conn.recv(1)))
    with pytest.raises(WrongState, match=r"1920x1080 screen \(at most 1280x800 is allowed\)"):
        thumbnails.capture(workspace)
