"""A queued seat waits in the broker, not in a worker thread; VNC passwords
rotate when a control session or a demo ends. No containers: the engine is a
subclass of the real DockerBackend that only records (tests/support/fakes.py); the
real display taking new passwords is tests/engine/test_vnc_rotation.py."""

from __future__ import annotations

import threading
import time
from unittest import mock

import pytest
from django.db import connections

from tests.support.fakes import endpoint_state, use_engine
from workspaces import tasks
from workspaces.engine.docker_backend import DockerBackend
from workspaces.engine.errors import EngineError
from workspaces.lib.redis import redis_client
from workspaces.models import Broadcast, Classroom, Image, Seat, Workspace
from workspaces.services import broadcasts, classrooms, lifecycle, teaching


class PasswordRecorder(DockerBackend):
    """Records the passwords a display was given; ``fail`` makes the engine refuse."""

    given: list[tuple[str, str, str]] = []
    fail = False

    def set_vnc_passwords(self, workspace_id: str, password: str, view_password: str) -> None:
        if self.fail:
            raise EngineError("The display is not running.")
        self.given.append((workspace_id, password, view_password))


@pytest.fixture
def desktop(db):
    return Image.objects.create(
        slug="desktop", reference="lattice/desktop:latest", kind="display", title="Desktop"
    )


@pytest.fixture
def room(teacher, owner):
    classroom = Classroom.objects.create(name="Looms")
    classroom.teachers.add(teacher)
    classroom.students.add(owner)
    return classroom


@pytest.fixture
def recorder(settings):
    PasswordRecorder.given = []
    PasswordRecorder.fail = False
    use_engine(settings, PasswordRecorder)
    return PasswordRecorder


def workspace_of(owner, desktop, state="running") -> Workspace:
    return Workspace.objects.create(
        owner=owner,
        display=desktop,
        state=state,
        vnc_password="old-ctl1",
        vnc_view_password="old-vie1",
        engine_state=endpoint_state("/run/lattice/test.sock"),
    )


# --- a queued seat --------------------------------------------------------------------


@pytest.fixture
def one_slot_taken(settings):
    """LATTICE_BROADCAST_CONCURRENCY 1, and another class's start holds that slot."""
    settings.LATTICE_BROADCAST_CONCURRENCY = 1
    redis = redis_client()
    redis.delete(classrooms.SLOTS_KEY)
    assert classrooms.StartSlots().try_acquire("seat:another-class")
    yield
    redis.delete(classrooms.SLOTS_KEY)


@pytest.mark.django_db(transaction=True)
def test_a_queued_seat_goes_back_to_the_broker_instead_of_holding_a_thread(
    one_slot_taken, teacher, room, owner, desktop
):
    sent = Broadcast.objects.create(classroom=room, teacher=teacher, display=desktop)
    seat = Seat.objects.create(broadcast=sent, student=owner)

    def run() -> None:
        try:
            tasks.start_seat(seat.pk)
        finally:
            connections.close_all()

    with mock.patch.object(tasks.classrooms.start_seat, "apply_async") as again:
        worker_thread = threading.Thread(target=run, daemon=True)
        worker_thread.start()
        worker_thread.join(5)
        assert not worker_thread.is_alive(), "the task waited for a slot in its worker thread"
    # Back in SLOT_POLL seconds, with the time it stops waiting (SLOT_WAIT from the first try).
    ((args, kwargs),) = [(c.args[0], c.kwargs) for c in again.call_args_list]
    assert args[0] == seat.pk and kwargs == {"countdown": broadcasts.SLOT_POLL}
    assert time.time() + broadcasts.SLOT_WAIT - 10 < args[1] <= time.time() + broadcasts.SLOT_WAIT
    seat.refresh_from_db()
    assert (seat.state, seat.attempts) == ("queued", 0)


@pytest.mark.django_db(transaction=True)
def test_a_queued_seat_keeps_its_deadline_however_often_it_polls(
    one_slot_taken, teacher, room, owner, desktop
):
    sent = Broadcast.objects.create(classroom=room, teacher=teacher, display=desktop)
    seat = Seat.objects.create(broadcast=sent, student=owner)
    deadline = time.time() + 60
    with mock.patch.object(tasks.classrooms.start_seat, "apply_async") as again:
        tasks.start_seat(seat.pk, deadline)
    again.assert_called_once_with((seat.pk, deadline), countdown=broadcasts.SLOT_POLL)


@pytest.mark.django_db(transaction=True)
def test_in_eager_mode_a_queued_seat_waits_inline_until_its_deadline(
    one_slot_taken, teacher, room, owner, desktop, monkeypatch
):
    monkeypatch.setattr(broadcasts, "_eager", lambda: True)
    monkeypatch.setattr(broadcasts, "SLOT_WAIT", 0.5)
    sent = Broadcast.objects.create(classroom=room, teacher=teacher, display=desktop)
    seat = Seat.objects.create(broadcast=sent, student=owner)
    with mock.patch.object(tasks.classrooms.start_seat, "apply_async") as again:
        tasks.start_seat(seat.pk)
    again.assert_not_called()  # no nested task per poll
    seat.refresh_from_db()
    assert seat.state == "failed" and "kept the engine busy" in seat.message


@pytest.mark.django_db(transaction=True)
def test_a_seat_that_waited_too_long_fails_with_a_reason(one_slot_taken, teacher, room, owner, desktop):
    sent = Broadcast.objects.create(classroom=room, teacher=teacher, display=desktop)
    seat = Seat.objects.create(broadcast=sent, student=owner)
    with mock.patch.object(tasks.classrooms.start_seat, "apply_async") as again:
        tasks.start_seat(seat.pk, broadcasts.SLOT_WAIT)
    again.assert_not_called()
    seat.refresh_from_db()
    assert seat.state == "failed" and "kept the engine busy; retry in a moment" in seat.message
    assert Broadcast.objects.get(pk=sent.pk).state == "done"


# --- VNC passwords ----------------------------------------------------------------------


def test_ending_a_control_session_rotates_the_students_passwords(
    teacher, room, owner, desktop, django_capture_on_commit_callbacks
):
    ws = workspace_of(owner, desktop)
    teaching.start_control(teacher, ws, "tab-one", room)
    teaching.start_control(teacher, ws, "tab-two", room)
    with mock.patch.object(tasks.rotate_vnc_passwords, "delay") as rotate:
        with django_capture_on_commit_callbacks(execute=True):
            teaching.end_control(ws, teacher, "tab-one")
        rotate.assert_not_called()  # tab-two still controls, with the same password
        with django_capture_on_commit_callbacks(execute=True):
            teaching.end_control(ws, teacher, "tab-two")
    rotate.assert_called_once_with(ws.pk)


def test_ending_a_view_rotates_nothing(teacher, room, owner, desktop, django_capture_on_commit_callbacks):
    ws = workspace_of(owner, desktop)
    teaching.start_session(teacher, ws, teaching.VIEW, "tab-one", room)
    with (
        mock.patch.object(tasks.rotate_vnc_passwords, "delay") as rotate,
        django_capture_on_commit_callbacks(execute=True),
    ):
        teaching.end_session(ws, teacher, "tab-one")
    rotate.assert_not_called()


def test_ending_a_demo_rotates_the_shown_workspaces_passwords(
    teacher, room, desktop, django_capture_on_commit_callbacks
):
    shown = workspace_of(teacher, desktop)
    teaching.start_demo(room, shown)
    with (
        mock.patch.object(tasks.rotate_vnc_passwords, "delay") as rotate,
        django_capture_on_commit_callbacks(execute=True),
    ):
        teaching.end_demo(room)
    rotate.assert_called_once_with(shown.pk)


def test_a_running_display_takes_the_new_passwords_and_the_row_follows(recorder, owner, desktop):
    ws = workspace_of(owner, desktop)
    tasks.rotate_vnc_passwords(ws.pk)
    ws.refresh_from_db()
    assert recorder.given == [(ws.engine_id, ws.vnc_password, ws.vnc_view_password)]
    assert "old-ctl1" not in (ws.vnc_password, ws.vnc_view_password)
    assert "old-vie1" not in (ws.vnc_password, ws.vnc_view_password)
    assert len(ws.vnc_password) == len(ws.vnc_view_password) == 8
    # A token issued from now on carries the new password, never the old one.
    _, password = lifecycle.issue_display_token(ws, "control")
    assert password == ws.vnc_password


def test_a_stopped_display_gets_new_passwords_at_its_next_start(recorder, owner, desktop):
    ws = workspace_of(owner, desktop, state="stopped")
    tasks.rotate_vnc_passwords(ws.pk)
    ws.refresh_from_db()
    assert recorder.given == []
    assert ws.vnc_password != "old-ctl1" and ws.vnc_view_password != "old-vie1"
    assert lifecycle.spec_for(ws).vnc_password == ws.vnc_password  # the next start makes the display anew


def test_when_the_display_refuses_the_row_keeps_the_passwords_it_has(recorder, owner, desktop):
    recorder.fail = True
    ws = workspace_of(owner, desktop)
    tasks.rotate_vnc_passwords(ws.pk)
    ws.refresh_from_db()
    assert (ws.vnc_password, ws.vnc_view_password) == ("old-ctl1", "old-vie1")


def test_a_start_under_way_rotates_once_it_is_over(
    recorder, owner, desktop, django_capture_on_commit_callbacks
):
    ws = workspace_of(owner, desktop, state="starting")
    with (
        mock.patch.object(tasks.rotate_vnc_passwords, "apply_async") as again,
        django_capture_on_commit_callbacks(execute=True),
    ):
        tasks.rotate_vnc_passwords(ws.pk)
    again.assert_called_once_with((ws.pk, 1), countdown=tasks.classrooms.ROTATE_POLL)
    ws.refresh_from_db()
    assert (ws.vnc_password, recorder.given) == ("old-ctl1", [])
