"""Broadcast starts without containers: a fake engine that subclasses the real
DockerBackend (only the calls a start makes are replaced), Celery eager, and
the real Redis of the test run for the start slots and the notices."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.db import connections
from django.utils import timezone

from tests.support.fakes import use_engine
from tests.support.saved_images_fakes import make_saved_image
from workspaces import tasks
from workspaces.engine.base import StartFailed
from workspaces.engine.docker_backend import DockerBackend
from workspaces.engine.specs import ContainerState, Endpoint
from workspaces.lib.redis import redis_client
from workspaces.models import Broadcast, Classroom, Image, PublishRequest, Seat, Workspace
from workspaces.services import backups, broadcasts, classrooms, file_copies, lifecycle, teaching

pytestmark = pytest.mark.django_db(transaction=True)


class CountingBackend(DockerBackend):
    """Starts take a moment and are counted while in flight; nothing touches Docker."""

    delay = 0.25
    fail_for: set[str] = set()  # owners whose next start fails
    lock = threading.Lock()
    in_flight = 0
    peak = 0
    started: list[str] = []  # owners, in order
    stopped: list[str] = []
    removed: list[str] = []
    running: set[str] = set()  # engine ids

    @classmethod
    def reset(cls) -> None:
        cls.in_flight = cls.peak = 0
        cls.fail_for = set()
        cls.started, cls.stopped, cls.removed = [], [], []
        cls.running = set()

    def start(self, spec, progress=None, timeout=60):
        with self.lock:
            type(self).in_flight += 1
            type(self).peak = max(type(self).peak, self.in_flight)
        try:
            if progress:
                progress(50, "Starting the display")
            time.sleep(self.delay)
            with self.lock:
                if spec.owner in self.fail_for:
                    self.fail_for.discard(spec.owner)
                    raise StartFailed(f"the display of {spec.owner} exited")
                self.started.append(spec.owner)
                self.running.add(spec.workspace_id)
        finally:
            with self.lock:
                type(self).in_flight -= 1
        return Endpoint(path=f"/run/lattice/{spec.workspace_id}.sock", container_id="c0ffee", server_pid=4242)

    def stop(self, workspace_id: str) -> None:
        self.stopped.append(workspace_id)
        self.running.discard(workspace_id)

    def remove(self, workspace_id: str) -> None:
        self.removed.append(workspace_id)
        self.running.discard(workspace_id)

    def list_workspaces(self) -> dict[str, str]:
        return dict.fromkeys(self.running, "running")

    def containers(self, workspace_id: str) -> list[ContainerState]:
        return [ContainerState(name="display", image="lattice/desktop:latest", state="stopped")]

    def copy_data(self, src_owner, src_path, dst_owner, dst_path):
        return [{"path": "main.py", "status": "copied", "sha256": "x", "source_sha256": "x"}]


@pytest.fixture
def fake_engine(settings):
    from portal.celery import app

    settings.LATTICE_BROADCAST_CONCURRENCY = 2
    use_engine(settings, CountingBackend)
    CountingBackend.reset()
    was_eager = app.conf.task_always_eager
    app.conf.task_always_eager = True
    redis_client().delete(classrooms.SLOTS_KEY)
    yield CountingBackend
    app.conf.task_always_eager = was_eager
    redis_client().delete(classrooms.SLOTS_KEY)


@pytest.fixture
def desktop(db):
    return Image.objects.create(
        slug="desktop", reference="lattice/desktop:latest", kind="display", title="Desktop"
    )


def make_class(make_user, teacher, name: str, size: int) -> Classroom:
    room = Classroom.objects.create(name=name)
    room.teachers.add(teacher)
    room.students.add(*[make_user(f"{name.lower()}{n}") for n in range(1, size + 1)])
    return room


def states(sent: Broadcast) -> dict[str, str]:
    return {
        seat.student.username: classrooms.displayed_state(seat)[0]
        for seat in Seat.objects.filter(broadcast=sent).select_related("student", "workspace")
    }


def in_thread(target, *args) -> threading.Thread:
    def run():
        try:
            target(*args)
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_the_start_bound_holds_across_two_classes_and_a_retry(fake_engine, make_user, teacher, desktop):
    first = make_class(make_user, teacher, "Alpha", 4)
    second = make_class(make_user, teacher, "Beta", 4)
    a = classrooms.broadcast(first, teacher, "desktop")  # eager: starts before it returns
    assert set(states(a).values()) == {"running"}
    fake_engine.reset()
    fake_engine.fail_for = set()
    # Now two classes at once, and a retry of a failed seat of the first class.
    failed = Seat.objects.get(broadcast=a, student__username="alpha1")
    Seat.objects.filter(pk=failed.pk).update(state="failed", message="it broke")
    Workspace.objects.filter(pk=failed.workspace_id).update(state="failed")
    b1 = Broadcast.objects.create(classroom=second, teacher=teacher, display=desktop)
    b2 = Broadcast.objects.create(classroom=first, teacher=teacher, display=desktop)
    for room, sent in ((second, b1), (first, b2)):
        Seat.objects.bulk_create(
            [Seat(broadcast=sent, student=s) for s in room.students.exclude(username="alpha1")]
        )
    threads = [
        in_thread(tasks.run_broadcast, b1.pk),
        in_thread(tasks.run_broadcast, b2.pk),
        in_thread(classrooms.retry, failed),
    ]
    for thread in threads:
        thread.join(30)
    assert len(fake_engine.started) == 4 + 3 + 1
    assert fake_engine.peak == 2, "two broadcasts and a retry must share LATTICE_BROADCAST_CONCURRENCY"
    assert set(states(b1).values()) == set(states(b2).values()) == {"running"}
    assert redis_client().zcard(classrooms.SLOTS_KEY) == 0, "every slot given back"


def test_a_slot_of_a_dead_worker_comes_back_when_its_lease_ends(fake_engine, settings):
    slots = classrooms.StartSlots(limit=1)
    assert slots.try_acquire("seat:1")
    assert not slots.try_acquire("seat:2")
    # A worker died holding seat:1: its lease runs out (here: made to).
    redis_client().zadd(classrooms.SLOTS_KEY, {"seat:1": 1})
    assert not slots.holds("seat:1")
    assert slots.try_acquire("seat:2")


def test_a_failed_seat_is_retried_without_touching_the_others(fake_engine, make_user, teacher, desktop):
    room = make_class(make_user, teacher, "Gamma", 3)
    fake_engine.fail_for = {"gamma2"}
    sent = classrooms.broadcast(room, teacher, "desktop")
    assert states(sent) == {"gamma1": "running", "gamma2": "failed", "gamma3": "running"}
    seat = Seat.objects.select_related("workspace").get(broadcast=sent, student__username="gamma2")
    assert "exited" in seat.message
    failed_ws = seat.workspace
    others = dict(
        Seat.objects.filter(broadcast=sent).exclude(pk=seat.pk).values_list("student__username", "workspace")
    )
    fake_engine.reset()

    classrooms.retry(seat)

    seat.refresh_from_db()
    assert (seat.state, seat.attempts) == ("running", 2)
    assert seat.workspace_id != failed_ws.pk
    assert fake_engine.started == ["gamma2"], "only the failed student started again"
    # The failed workspace is removed (its containers; its row), not left to pile up.
    assert fake_engine.removed == [failed_ws.engine_id]
    assert not Workspace.objects.filter(pk=failed_ws.pk).exists()
    assert (
        dict(
            Seat.objects.filter(broadcast=sent)
            .exclude(pk=seat.pk)
            .values_list("student__username", "workspace")
        )
        == others
    )
    assert Workspace.objects.filter(owner__username="gamma2").count() == 1


def test_a_seat_that_failed_without_an_event_still_reaches_the_grid(fake_engine, make_user, teacher, desktop):
    from unittest import mock

    room = make_class(make_user, teacher, "Delta", 1)
    sent = Broadcast.objects.create(classroom=room, teacher=teacher, display=desktop)
    seat = Seat.objects.create(broadcast=sent, student=room.students.get())
    with (
        mock.patch.object(classrooms, "make_room", side_effect=RuntimeError("database went away")),
        mock.patch.object(classrooms, "publish_group") as sent_events,
    ):
        tasks.run_broadcast(sent.pk)
    seat.refresh_from_db()
    assert seat.state == "failed" and "database went away" in seat.message
    last = sent_events.call_args_list[-1].args[1]
    assert (last["type"], last["student"], last["state"]) == ("seat", "delta1", "failed")


def test_a_seat_left_starting_by_a_dead_worker_is_taken_up_again(fake_engine, make_user, teacher, desktop):
    room = make_class(make_user, teacher, "Eps", 2)
    sent = Broadcast.objects.create(classroom=room, teacher=teacher, display=desktop, state="running")
    first, second = room.students.order_by("username")
    # The dead worker had made the workspace and begun its start.
    stuck_ws = Workspace.objects.create(owner=first, display=desktop, state="starting")
    stuck = Seat.objects.create(broadcast=sent, student=first, state="starting", workspace=stuck_ws)
    alive = Seat.objects.create(broadcast=sent, student=second, state="starting")  # its lease holds
    lapsed = timezone.now() - timedelta(seconds=1)
    Seat.objects.filter(pk=stuck.pk).update(leased_until=lapsed)
    Workspace.objects.filter(pk=stuck_ws.pk).update(leased_until=lapsed)

    fixed = tasks.reconcile()

    assert fixed["seats"] == 1 and fixed["workspaces"] == 1
    stuck.refresh_from_db()
    alive.refresh_from_db()
    # Went on from where it was: the same workspace, now running; no second one made.
    assert (stuck.state, stuck.workspace_id, stuck.recoveries) == ("running", stuck_ws.pk, 1)
    assert Workspace.objects.get(pk=stuck_ws.pk).state == "running"
    assert Workspace.objects.filter(owner=first).count() == 1
    assert alive.state == "starting"  # a live start is not taken from under its worker
    Seat.objects.filter(pk=alive.pk).update(state="running")
    tasks.reconcile()
    assert Broadcast.objects.get(pk=sent.pk).state == "done"


def test_a_seat_interrupted_too_often_fails_and_can_be_retried(
    fake_engine, make_user, teacher, desktop, api_client, settings
):
    room = make_class(make_user, teacher, "Zet", 1)
    sent = Broadcast.objects.create(classroom=room, teacher=teacher, display=desktop, state="running")
    seat = Seat.objects.create(
        broadcast=sent,
        student=room.students.first(),
        state="starting",
        attempts=1,
        recoveries=settings.LATTICE_MAX_RECOVERIES,
        leased_until=timezone.now() - timedelta(seconds=1),
    )
    tasks.reconcile()
    seat.refresh_from_db()
    assert seat.state == "failed" and "interrupted" in seat.message
    assert Broadcast.objects.get(pk=sent.pk).state == "done"
    api_client.force_authenticate(teacher)
    assert api_client.post(f"/api/broadcasts/{sent.pk}/students/zet1/retry/").status_code == 202
    seat.refresh_from_db()
    assert seat.state == "running"


def test_a_queued_seat_whose_message_was_lost_is_sent_again(fake_engine, make_user, teacher, desktop):
    room = make_class(make_user, teacher, "Ita", 1)
    sent = Broadcast.objects.create(classroom=room, teacher=teacher, display=desktop, state="running")
    seat = Seat.objects.create(broadcast=sent, student=room.students.first())
    assert tasks.reconcile()["seats"] == 0  # its message may still be on its way
    Seat.objects.filter(pk=seat.pk).update(leased_until=timezone.now() - timedelta(seconds=1))
    assert tasks.reconcile()["seats"] == 1
    seat.refresh_from_db()
    assert seat.state == "running"


def approved(image: Image, admin) -> Image:
    """What admin_catalog.approve leaves: the request approved, its catalog entry made."""
    entry = Image.objects.create(
        slug=f"published-{image.pk}", reference=image.reference, kind=image.kind, title=image.title
    )
    PublishRequest.objects.create(
        image=image, requested_by=image.owner, state="approved", reviewer=admin, published=entry
    )
    return image


def test_a_broadcast_of_the_teachers_own_reviewed_image(
    fake_engine, make_user, teacher, desktop, api_client, admin_user
):
    mine = approved(make_saved_image(teacher, "my-desktop", kind="display", title="My desktop"), admin_user)
    tool = approved(make_saved_image(teacher, "my-tool", title="My tool"), admin_user)
    room = make_class(make_user, teacher, "Zeta", 2)
    sent = classrooms.broadcast(room, teacher, "teach/my-desktop:1", ["teach/my-tool:1"])
    assert set(states(sent).values()) == {"running"}
    for ws in Workspace.objects.filter(owner__classrooms=room):
        assert ws.display == mine and list(ws.apps.all()) == [tool]
    # A co-teacher cannot send it: for them it does not exist.
    other = make_user("other-teach", role="teacher")
    room.teachers.add(other)
    api_client.force_authenticate(other)
    response = api_client.post(
        f"/api/classrooms/{room.pk}/broadcasts/", {"display": "teach/my-desktop:1"}, format="json"
    )
    assert response.status_code == 404
    assert Broadcast.objects.filter(classroom=room).count() == 1


def test_a_broadcast_keeps_students_under_their_running_limit(
    fake_engine, make_user, teacher, desktop, settings
):
    settings.LATTICE_MAX_RUNNING_WORKSPACES = 1
    room = make_class(make_user, teacher, "Eta", 2)
    week1 = classrooms.broadcast(room, teacher, "desktop")
    assert set(states(week1).values()) == {"running"}
    # eta2 also runs a workspace of their own, launched from their dashboard.
    Workspace.objects.filter(owner__username="eta2").update(state="stopped")
    lifecycle.launch(room.students.get(username="eta2"), "desktop")

    week2 = classrooms.broadcast(room, teacher, "desktop")

    # eta1's week-1 workspace made room for week 2; eta2's own work was not touched.
    assert states(week2) == {"eta1": "running", "eta2": "failed"}
    assert states(week1)["eta1"] == "stopped"
    seat = Seat.objects.get(broadcast=week2, student__username="eta2")
    assert "eta2 already runs 1 other workspace(s), the most allowed is 1" in seat.message
    assert Workspace.objects.filter(owner__username="eta2", state="running").count() == 1


def test_a_start_renews_its_slot_as_it_reports_progress(
    fake_engine, make_user, teacher, desktop, monkeypatch
):
    renewed: list[str] = []
    refresh = classrooms.StartSlots.refresh
    monkeypatch.setattr(
        classrooms.StartSlots, "refresh", lambda self, member: (renewed.append(member), refresh(self, member))
    )
    room = make_class(make_user, teacher, "Kappa", 1)
    sent = classrooms.broadcast(room, teacher, "desktop")
    assert states(sent) == {"kappa1": "running"}
    seat = Seat.objects.get(broadcast=sent)
    # Once before the workspace's start, and again on the engine's progress report
    # (a long restore or start must not let the lease run out under it).
    assert renewed == [classrooms.seat_slot(seat.pk)] * 2


def test_the_grid_hears_that_a_students_workspace_was_deleted(
    fake_engine, make_user, teacher, desktop, monkeypatch
):
    room = make_class(make_user, teacher, "Lambda", 1)
    classrooms.broadcast(room, teacher, "desktop")
    ws = Workspace.objects.get(owner__username="lambda1")
    heard: list[tuple[str, dict]] = []
    monkeypatch.setattr(lifecycle, "publish_group", lambda group, event: heard.append((group, event)))

    lifecycle.delete(ws)  # the student deletes it from their dashboard; the task runs eagerly

    assert not Workspace.objects.filter(pk=ws.pk).exists()
    assert (f"class-{room.pk}", "seat-workspace", ws.pk, "lambda1", "deleted") in [
        (group, e["type"], e["id"], e["student"], e["state"]) for group, e in heard
    ]


def test_stop_all_stops_seats_and_cancels_the_queue(fake_engine, make_user, teacher, desktop, api_client):
    room = make_class(make_user, teacher, "Theta", 2)
    running = classrooms.broadcast(room, teacher, "desktop")
    queued = Broadcast.objects.create(classroom=room, teacher=teacher, display=desktop)
    Seat.objects.bulk_create([Seat(broadcast=queued, student=s) for s in room.students.all()])

    api_client.force_authenticate(teacher)
    assert api_client.post(f"/api/classrooms/{room.pk}/stop/").json() == {"stopping": 2}

    body = api_client.get(f"/api/broadcasts/{running.pk}/").json()
    assert {s["state"] for s in body["students"]} == {"stopped"}
    body = api_client.get(f"/api/broadcasts/{queued.pk}/").json()
    assert {(s["state"], s["message"]) for s in body["students"]} == {
        ("stopped", "Cancelled: the class was stopped")
    }
    tasks.run_broadcast(queued.pk)  # the queued starts, arriving late, start nothing
    assert Workspace.objects.filter(state="running").count() == 0
    # A student starts their workspace again: the grid follows the workspace.
    ws = Seat.objects.get(broadcast=running, student__username="theta1").workspace
    lifecycle.start(ws)
    body = api_client.get(f"/api/broadcasts/{running.pk}/").json()
    assert {s["username"]: s["state"] for s in body["students"]} == {"theta1": "running", "theta2": "stopped"}


def test_an_online_student_gets_a_notice_that_lasts_until_opened(fake_engine, make_user, teacher, desktop):
    room = make_class(make_user, teacher, "Iota", 1)
    student = room.students.get()
    classrooms.broadcast(room, teacher, "desktop")
    ws = Workspace.objects.get(owner=student)
    pending = teaching.pending(student)["notices"]
    assert pending == [
        {
            "type": "notice",
            "id": ws.pk,
            "workspace": ws.pk,
            "message": "teach started Desktop for Iota.",
            "open": f"/workspaces/{ws.pk}/",
        }
    ]
    assert teaching.pending(student)["notices"] == pending, "reading it does not end it"
    teaching.dismiss(student, ws.pk)
    assert teaching.pending(student)["notices"] == []


# --- a student who left ------------------------------------------------------------------


def queued_seats(room: Classroom, teacher, desktop, files: str = "") -> Broadcast:
    """A broadcast whose seats wait in the queue (nothing started yet)."""
    sent = Broadcast.objects.create(classroom=room, teacher=teacher, display=desktop, files=files)
    Seat.objects.bulk_create([Seat(broadcast=sent, student=s) for s in room.students.all()])
    return sent


def test_leaving_ends_the_students_queued_seats(fake_engine, make_user, teacher, desktop):
    room = make_class(make_user, teacher, "Mu", 2)
    sent = queued_seats(room, teacher, desktop)
    mu1 = room.students.get(username="mu1")

    classrooms.leave(mu1, room.pk)

    seat = Seat.objects.get(broadcast=sent, student=mu1)
    assert (seat.state, seat.message) == ("stopped", "Left the class")
    tasks.run_broadcast(sent.pk)  # the starts, arriving late, start nothing of theirs
    assert fake_engine.started == ["mu2"]
    assert not Workspace.objects.filter(owner=mu1).exists()


def test_a_start_refuses_a_student_no_longer_in_the_class(
    fake_engine, make_user, teacher, desktop, monkeypatch
):
    room = make_class(make_user, teacher, "Nu", 1)
    sent = queued_seats(room, teacher, desktop, files="lessons")
    nu1 = room.students.get()
    copies: list = []
    monkeypatch.setattr(broadcasts.file_copies, "copy_folder", lambda *args: copies.append(args) or [])
    # Gone between the queue and the start (the seat's own row was not moved).
    room.students.remove(nu1)

    tasks.start_seat(Seat.objects.get(broadcast=sent).pk)

    seat = Seat.objects.get(broadcast=sent)
    assert (seat.state, seat.message) == ("failed", "Left the class")
    assert copies == [] and fake_engine.started == []
    assert not Workspace.objects.filter(owner=nu1).exists()


def test_retry_stop_all_and_the_broadcast_reach_members_only(
    fake_engine, make_user, teacher, desktop, api_client
):
    room = make_class(make_user, teacher, "Xi", 2)
    fake_engine.fail_for = {"xi1"}
    sent = classrooms.broadcast(room, teacher, "desktop")
    assert states(sent) == {"xi1": "failed", "xi2": "running"}
    xi2 = room.students.get(username="xi2")
    xi2_ws = Seat.objects.get(broadcast=sent, student=xi2).workspace
    classrooms.leave(room.students.get(username="xi1"), room.pk)
    classrooms.leave(xi2, room.pk)
    room.students.add(make_user("xi3"))
    fake_engine.reset()
    api_client.force_authenticate(teacher)

    assert api_client.post(f"/api/broadcasts/{sent.pk}/students/xi1/retry/").status_code == 404
    assert api_client.get(f"/api/broadcasts/{sent.pk}/").json()["students"] == []
    assert api_client.post(f"/api/classrooms/{room.pk}/stop/").json() == {"stopping": 0}
    assert fake_engine.started == [] and fake_engine.stopped == []
    xi2_ws.refresh_from_db()
    assert xi2_ws.state == "running", "the workspace is the student's own now"
    assert Seat.objects.get(broadcast=sent, student=xi2).state == "running"


# --- the teacher's files and their lock ---------------------------------------------------


class VolumesBackend(CountingBackend):
    """Knows which users have a data volume; no old username-keyed volumes."""

    volumes: set[int] = set()

    def data_volume_exists(self, user_id: int) -> bool:
        return user_id in self.volumes

    def legacy_data_volumes(self):
        return []


def copy_in_thread(teacher, student) -> tuple[threading.Thread, list]:
    done: list = []
    thread = in_thread(lambda: done.append(file_copies.copy_folder(teacher, "lessons", student, "Class")))
    return thread, done


def test_a_seat_copies_the_teachers_files_while_the_teacher_backs_up(
    fake_engine, settings, make_user, teacher
):
    """Looking whether the teacher's volume is there takes no lock: a backup holds it for its whole export."""
    use_engine(settings, VolumesBackend)
    student = make_user("omicron1")
    VolumesBackend.volumes = {teacher.pk, student.pk}
    with backups.held(teacher):  # the teacher's backup, under way
        thread, done = copy_in_thread(teacher, student)
        thread.join(timeout=5)
        assert done and done[0][0]["status"] == "copied", "the copy waited behind the teacher's backup"


def test_a_teachers_missing_volume_is_brought_back_under_their_lock(
    fake_engine, settings, make_user, teacher
):
    use_engine(settings, VolumesBackend)
    student = make_user("omicron2")
    VolumesBackend.volumes = {student.pk}  # the teacher's files are not on this engine yet
    with backups.held(teacher):
        thread, done = copy_in_thread(teacher, student)
        thread.join(timeout=0.5)
        assert thread.is_alive() and not done, "bringing the files back waits for the lock"
    thread.join(timeout=5)
    assert done and done[0][0]["status"] == "copied"


class ManyLinksBackend(VolumesBackend):
    """A student whose class folder holds a main.py and 250 symbolic links."""

    def copy_data(self, src_owner, src_path, dst_owner, dst_path):
        links = [{"path": f"link{n}", "status": "skipped", "detail": "a symbolic link"} for n in range(250)]
        return [*super().copy_data(src_owner, src_path, dst_owner, dst_path), *links]


def test_a_collect_lists_the_first_skipped_files_and_counts_them_all(
    fake_engine, settings, make_user, teacher
):
    use_engine(settings, ManyLinksBackend)
    room = make_class(make_user, teacher, "Pi", 1)
    student = room.students.get()
    ManyLinksBackend.volumes = {teacher.pk, student.pk}

    outcome = tasks.classrooms._collect_from(student, room, teacher)

    assert outcome["ok"] and outcome["files"] == 1
    assert outcome["skipped_count"] == 250
    assert outcome["skipped"] == [{"path": f"link{n}", "detail": "a symbolic link"} for n in range(100)]
    assert "250 skipped" in outcome["detail"]


def test_a_reviewed_image_stays_reviewed_when_its_published_copy_is_deleted(
    fake_engine, make_user, teacher, admin_user
):
    mine = approved(make_saved_image(teacher, "my-desktop", kind="display", title="My desktop"), admin_user)
    PublishRequest.objects.get(image=mine).published.delete()  # an admin removes the catalog's copy
    assert PublishRequest.objects.get(image=mine).published is None
    room = make_class(make_user, teacher, "Rho", 1)

    sent = classrooms.broadcast(room, teacher, "teach/my-desktop:1")

    assert states(sent) == {"rho1": "running"}
