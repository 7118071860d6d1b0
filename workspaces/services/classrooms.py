"""Classrooms: members, broadcasts of an environment, end and collect.

Only a classroom's teachers act on it; everyone else gets "not found" from the
views, which look classrooms up through ``taught_by(user)``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import posixpath
import time
from collections.abc import Iterable

from django.conf import settings
from django.db import transaction
from django.db.models import F, Prefetch, QuerySet
from django.http import Http404

from .. import leases
from ..lib import queue, refusals
from ..lib.events import class_group, publish_group
from ..lib.redis import redis_client
from ..models import (
    ACTIVE_STATES,
    Broadcast,
    Classroom,
    Image,
    PublishRequest,
    ReviewState,
    Role,
    Seat,
    SeatState,
    User,
    Workspace,
    WorkspaceState,
)
from . import audit, lifecycle
from .catalog import launchable
from .teaching import end_class_sessions

logger = logging.getLogger(__name__)


class ClassroomError(refusals.BadInput):
    """Bad input (HTTP 400)."""


def taught_by(user: User) -> QuerySet[Classroom]:
    return Classroom.objects.filter(teachers=user)


def students_by_name(usernames: Iterable[str]) -> list[User]:
    wanted = {name.strip().lower() for name in usernames if name and name.strip()}
    found = {u.username: u for u in User.objects.filter(username__in=wanted)}
    unknown = sorted(wanted - set(found))
    if unknown:
        raise ClassroomError(f"No such user: {', '.join(unknown)}.")
    not_students = sorted(name for name, user in found.items() if user.role != Role.STUDENT)
    if not_students:
        raise ClassroomError(f"Not a student account: {', '.join(not_students)}.")
    return sorted(found.values(), key=lambda u: u.username)


def usernames_from_csv(text: str) -> list[str]:
    """The first column of each row; a header row named "username" is skipped."""
    # Spreadsheets saving "CSV UTF-8" start the file with a byte order mark.
    text = text.lstrip("\ufeff")
    rows = [row for row in csv.reader(io.StringIO(text)) if row and row[0].strip()]
    if rows and rows[0][0].strip().lower() in ("username", "user", "login"):
        rows = rows[1:]
    return [row[0].strip() for row in rows]


def _check_size(classroom: Classroom, adding: int, counting_invited: bool) -> None:
    """OverLimit when ``adding`` more would pass LATTICE_CLASSROOM_MAX_STUDENTS.

    Invitations count too when a teacher invites, so a class can never be
    sent more invitations than it could ever have members.
    """
    limit = settings.LATTICE_CLASSROOM_MAX_STUDENTS
    have = classroom.students.count()
    if counting_invited:
        have += classroom.invited.exclude(pk__in=classroom.students.values("pk")).count()
    if have + adding > limit:
        raise ClassFull(
            f"{classroom.name} would have {have + adding} students; the most a class may have is {limit} "
            "(LATTICE_CLASSROOM_MAX_STUDENTS). Split the class, or ask an administrator."
        )


class ClassFull(refusals.OverLimit):
    """The class is at LATTICE_CLASSROOM_MAX_STUDENTS (HTTP 429)."""


def create(teacher: User, name: str, usernames: Iterable[str] = ()) -> Classroom:
    """A new class of this teacher's; the students named are invited, not added."""
    name = (name or "").strip()
    if not name:
        raise ClassroomError("Give the classroom a name.")
    students = students_by_name(usernames)
    with transaction.atomic():
        classroom = Classroom.objects.create(name=name[:80])
        classroom.teachers.add(teacher)
        invite(classroom, teacher, students)
    return classroom


def invite(classroom: Classroom, teacher: User, students: list[User]) -> list[User]:
    """Invite students: they become members only when they accept (members are skipped)."""
    members = set(classroom.students.values_list("pk", flat=True))
    already = set(classroom.invited.values_list("pk", flat=True))
    new = [s for s in students if s.pk not in members and s.pk not in already]
    _check_size(classroom, len(new), counting_invited=True)
    classroom.invited.add(*new)
    for student in new:
        audit.record(audit.INVITE, actor=teacher, subject=student, classroom=classroom)
    return new


def add_students(classroom: Classroom, teacher: User, usernames: Iterable[str]) -> list[User]:
    """A teacher's "add students" (names or CSV): invitations."""
    return invite(classroom, teacher, students_by_name(usernames))


def place(classroom: Classroom, admin: User, usernames: Iterable[str]) -> list[User]:
    """An admin puts students in the class directly (no invitation to accept)."""
    if admin.role != Role.ADMIN:
        raise refusals.Forbidden("Only an administrator places students in a class.")
    students = students_by_name(usernames)
    with transaction.atomic():
        members = set(classroom.students.values_list("pk", flat=True))
        new = [s for s in students if s.pk not in members]
        _check_size(classroom, len(new), counting_invited=False)
        classroom.students.add(*new)
        classroom.invited.remove(*new)
        for student in new:
            audit.record(audit.PLACE, actor=admin, subject=student, classroom=classroom)
    return new


def add_teacher(classroom: Classroom, username: str) -> User:
    user = User.objects.filter(username__iexact=(username or "").strip()).first()
    if user is None or user.role != Role.TEACHER:
        raise ClassroomError(f"'{username}' is not a teacher account.")
    classroom.teachers.add(user)
    return user


def _become_member(classroom: Classroom, student: User, action: str) -> None:
    if student.role != Role.STUDENT:
        raise ClassroomError("Only student accounts join classrooms.")
    with transaction.atomic():
        if not classroom.students.filter(pk=student.pk).exists():
            _check_size(classroom, 1, counting_invited=False)
            classroom.students.add(student)
            audit.record(action, actor=student, subject=student, classroom=classroom)
        classroom.invited.remove(student)


def join(student: User, code: str) -> Classroom:
    classroom = Classroom.objects.filter(join_code=(code or "").strip().upper()).first()
    if classroom is None:
        raise ClassroomError("That join code does not match a classroom. Check it with your teacher.")
    if student.role != Role.STUDENT:
        raise ClassroomError("Only student accounts join classrooms with a code.")
    _become_member(classroom, student, audit.JOIN)
    return classroom


def invitation(student: User, pk: int) -> Classroom:
    """A class that invited this student (404 for any other)."""
    classroom = student.invitations.filter(pk=pk).first()
    if classroom is None:
        raise refusals.Missing("No invitation to that classroom.")
    return classroom


def accept(student: User, pk: int) -> Classroom:
    classroom = invitation(student, pk)
    _become_member(classroom, student, audit.ACCEPT)
    return classroom


def decline(student: User, pk: int) -> None:
    classroom = invitation(student, pk)
    classroom.invited.remove(student)
    audit.record(audit.DECLINE, actor=student, subject=student, classroom=classroom)


def leave(student: User, pk: int) -> Classroom:
    """The student leaves: every view or control of their screens through this class ends now."""
    classroom = student.classrooms.filter(pk=pk).first()
    if classroom is None:
        raise refusals.Missing("You are not in that classroom.")
    classroom.students.remove(student)
    audit.record(audit.LEAVE, actor=student, subject=student, classroom=classroom)
    end_access(classroom, student, "the student left the class")
    end_seats(classroom, student, LEFT)
    return classroom


# A seat's last message once its student is no longer in the class.
LEFT = "Left the class"


def end_seats(classroom: Classroom, student: User, message: str) -> int:
    """The student's queued or starting seats of this class end now (a start under way goes no further)."""
    seats = Seat.objects.filter(
        broadcast__classroom=classroom, student=student, state__in=[SeatState.QUEUED, SeatState.STARTING]
    ).select_related("broadcast", "student", "workspace")
    return sum(
        move_seat(seat, [SeatState.QUEUED, SeatState.STARTING], state=SeatState.STOPPED, message=message)
        for seat in seats
    )


def is_member(classroom: Classroom | int, student: User | int) -> bool:
    return Classroom.objects.filter(pk=getattr(classroom, "pk", classroom), students=student).exists()


def members_seats(seats: QuerySet[Seat]) -> QuerySet[Seat]:
    """Only the seats of students still in the seat's class: who left is nobody's to reach through it."""
    return seats.filter(student__classrooms=F("broadcast__classroom"))


def end_access(classroom: Classroom, student: User, reason: str) -> None:
    """End every view and control of this student's screens that came through this class."""
    ids = Seat.objects.filter(broadcast__classroom=classroom, student=student, workspace__isnull=False)
    for workspace in Workspace.objects.filter(pk__in=ids.values("workspace_id")):
        end_class_sessions(workspace, classroom, reason=reason)


def check_files_path(path: str) -> str:
    path = (path or "").strip().strip("/")
    if not path:
        return ""
    if ".." in path.split("/") or "\0" in path or posixpath.normpath(path).startswith(".."):
        raise ClassroomError("The starter files must be a folder inside your /data, like 'lessons/week1'.")
    return posixpath.normpath(path)


def broadcast(
    classroom: Classroom, teacher: User, display: str, apps: Iterable[str] = (), files: str = ""
) -> Broadcast:
    """Queue a workspace of this environment for every student of the class."""
    apps = list(apps)
    # The teacher picks from what they may launch (the catalog and their own
    # saved images); the students get it because the teacher sent it.
    display_image, app_images = lifecycle.pick_images(launchable(teacher), display, apps)
    check_reviewed([display_image, *app_images])
    files = check_files_path(files)
    # Members only: an invited student who has not accepted gets nothing, not even a seat.
    students = list(classroom.students.all())
    if not students:
        raise ClassroomError(
            "The classroom has no members yet: students join with the code or accept your invitation."
        )
    with transaction.atomic():
        sent = Broadcast.objects.create(
            classroom=classroom, teacher=teacher, display=display_image, files=files
        )
        sent.apps.set(app_images)
        Seat.objects.bulk_create([Seat(broadcast=sent, student=s) for s in students])
        queue.later("workspaces.tasks.classroom.run_broadcast", sent.pk)
    return sent


class NotReviewed(refusals.Forbidden):
    """A saved image no admin approved, sent to a class (HTTP 403)."""


def check_reviewed(images: list[Image]) -> None:
    """A teacher's own saved image goes to students only once an admin approved it.

    Unless the site allows unreviewed images in classes
    (LATTICE_CLASSES_ALLOW_UNREVIEWED_IMAGES): a saved image is whatever its
    owner installed, and a class puts it in front of every student.
    """
    if settings.LATTICE_CLASSES_ALLOW_UNREVIEWED_IMAGES:
        return
    saved = [image for image in images if image.owner_id is not None]
    approved = set(
        # The review is what counts: an admin may later delete the published copy
        # (the request's link to it becomes null), which unreviews nothing.
        PublishRequest.objects.filter(image__in=saved, state=ReviewState.APPROVED).values_list(
            "image_id", flat=True
        )
    )
    unreviewed = [image.slug for image in saved if image.pk not in approved]
    if unreviewed:
        what = "is your own saved image" if len(unreviewed) == 1 else "are your own saved images"
        raise NotReviewed(
            f"{', '.join(unreviewed)} {what}, not reviewed: an admin must review a saved image before "
            "it goes to a class. Submit it for publishing from its page; once an administrator "
            "approves it, you can send it."
        )


# --- starting seats ---------------------------------------------------------------

SLOTS_KEY = "lattice:start-slots"

# Slots are leases in one sorted set (member -> expiry, Redis's own clock), so
# the bound holds across every broadcast, retry and worker process, and a
# worker that dies mid-start gives its slot back when the lease runs out.
_ACQUIRE = """
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', t)
if redis.call('ZSCORE', KEYS[1], ARGV[3]) or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], t + tonumber(ARGV[2]), ARGV[3])
  return 1
end
return 0
"""
_REFRESH = """
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1000000
return redis.call('ZADD', KEYS[1], 'XX', 'CH', t + tonumber(ARGV[1]), ARGV[2])
"""
_HOLDS = """
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1000000
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) > t then return 1 end
return 0
"""


def lease_seconds() -> float:
    """How long one start holds its slot without renewing it: the seat's lease (renewed with it),
    so the slots of a worker that died free as soon as its seats are taken up again."""
    return leases.seconds()


class StartSlots:
    """At most LATTICE_BROADCAST_CONCURRENCY seat starts at once, across the whole site."""

    def __init__(self, client=None, limit: int | None = None):
        self.redis = client or redis_client()
        self.limit = limit if limit is not None else settings.LATTICE_BROADCAST_CONCURRENCY

    def try_acquire(self, member: str) -> bool:
        return bool(self.redis.eval(_ACQUIRE, 1, SLOTS_KEY, self.limit, lease_seconds(), member))

    def acquire(self, member: str, wait: float, poll: float = 0.1) -> bool:
        deadline = time.monotonic() + wait
        while not self.try_acquire(member):
            if time.monotonic() > deadline:
                return False
            time.sleep(poll)
        return True

    def refresh(self, member: str) -> None:
        self.redis.eval(_REFRESH, 1, SLOTS_KEY, lease_seconds(), member)

    def release(self, member: str) -> None:
        self.redis.zrem(SLOTS_KEY, member)

    def holds(self, member: str) -> bool:
        return bool(self.redis.eval(_HOLDS, 1, SLOTS_KEY, member))


def seat_slot(seat_id: int) -> str:
    return f"seat:{seat_id}"


def displayed_state(seat: Seat) -> tuple[str, str]:
    """What the grid shows: once a seat's start is over, its workspace says where it is.

    A student restarts a stopped workspace, "stop all" stops it, reconcile
    finds it dead: the seat row keeps how the broadcast went, the workspace
    how it is now.
    """
    ws = seat.workspace
    if seat.state not in (SeatState.RUNNING, SeatState.STOPPED, SeatState.FAILED):
        return seat.state, seat.message
    if ws is None or ws.deleting:
        if seat.state == SeatState.RUNNING:
            return SeatState.STOPPED, "Deleted"
        return seat.state, seat.message
    state = {
        WorkspaceState.PENDING: SeatState.STARTING,
        WorkspaceState.STARTING: SeatState.STARTING,
        WorkspaceState.RUNNING: SeatState.RUNNING,
        WorkspaceState.STOPPING: SeatState.STOPPED,
        WorkspaceState.STOPPED: SeatState.STOPPED,
        WorkspaceState.FAILED: SeatState.FAILED,
    }[ws.state]
    if state == seat.state or (seat.state == SeatState.FAILED and state == SeatState.STOPPED):
        return seat.state, seat.message  # a failed seat keeps its reason, and its Retry
    return state, ws.message


def seat_event(seat: Seat) -> dict:
    state, message = displayed_state(seat)
    ws = seat.workspace
    return {
        "type": "seat",
        "broadcast": seat.broadcast_id,
        "student": seat.student.username,
        "state": state,
        "message": message,
        "workspace": seat.workspace_id,
        "progress": ws.progress if ws else 0,
        "files": seat.files,
        "attempts": seat.attempts,
    }


def publish_seat(seat: Seat) -> None:
    publish_group(class_group(seat.broadcast.classroom_id), seat_event(seat))


def move_seat(seat: Seat, expected: Iterable[str], **fields) -> bool:
    """Conditional seat update; on success the class's teachers hear of it."""
    if Seat.objects.filter(pk=seat.pk, state__in=list(expected)).update(**fields) != 1:
        return False
    for name, value in fields.items():
        setattr(seat, name, value)
    publish_seat(seat)
    return True


def retry(seat: Seat) -> Seat:
    """Start one student's seat again, replacing a workspace that failed; nobody else is touched.

    Returns the seat as it is now (queued, or running when its workspace came up after all).
    """
    seat = Seat.objects.select_related("workspace", "broadcast", "student").get(pk=seat.pk)
    old = seat.workspace
    if seat.state != SeatState.FAILED:
        raise lifecycle.WrongState("Only a failed student's start can be retried.")
    limit = settings.LATTICE_SEAT_MAX_ATTEMPTS
    if seat.attempts >= limit:
        raise lifecycle.WrongState(
            f"{seat.student.username}'s start was tried {seat.attempts} times, the most allowed "
            f"(LATTICE_SEAT_MAX_ATTEMPTS={limit}): look at why it fails (the message above), "
            "or broadcast again."
        )
    if old is not None and not old.deleting and old.state == WorkspaceState.RUNNING:
        # It came up after all (e.g. the student started it): nothing to start.
        move_seat(seat, [SeatState.FAILED], state=SeatState.RUNNING, message="Running")
        return seat
    queued = {"state": SeatState.QUEUED, "message": "Queued", "workspace": None}
    if not move_seat(seat, [SeatState.FAILED], **queued, leased_until=leases.lease_end(), recoveries=0):
        raise lifecycle.WrongState("Only a failed student's start can be retried.")
    if old is not None:
        _discard(old)
    queue.later("workspaces.tasks.classroom.start_seat", seat.pk)
    return seat


def _discard(workspace: Workspace) -> None:
    """Remove a failed seat's workspace (containers and network; never the data volume)."""
    was_starting = workspace.state == WorkspaceState.STARTING
    try:
        lifecycle.delete(workspace)
    except lifecycle.WrongState:
        return  # already being deleted
    if was_starting:
        # Its start died with its worker, so nobody else will carry out the delete.
        queue.later("workspaces.tasks.workspace.remove_workspace", workspace.pk)


def make_room(seat: Seat) -> None:
    """Stop what keeps the student at LATTICE_MAX_RUNNING_WORKSPACES, if the class started it.

    Only the class's earlier broadcast workspaces of this student are stopped,
    oldest first and only as many as needed; a student's own workspaces are
    never touched (create_seat_workspace then fails the seat, saying so).
    """
    limit = settings.LATTICE_MAX_RUNNING_WORKSPACES
    active = Workspace.objects.visible().filter(owner=seat.student, state__in=ACTIVE_STATES)
    excess = active.count() - limit + 1
    if excess > 0:
        # This seat has no workspace yet, so the class's are all earlier broadcasts'.
        started = class_workspaces(seat.broadcast.classroom_id).filter(
            owner=seat.student, state__in=ACTIVE_STATES
        )
        for workspace in started.order_by("created")[:excess]:
            with contextlib.suppress(lifecycle.WrongState):  # stopped meanwhile
                lifecycle.stop(workspace)


def create_seat_workspace(seat: Seat) -> Workspace | None:
    """The seat's workspace row, or None when the seat was stopped meanwhile.

    OverLimit when the student runs as many workspaces as allowed: counted
    under the student's row lock, as a launch from their dashboard is.
    """
    sent = seat.broadcast
    with transaction.atomic():
        lifecycle.check_running_limit(
            seat.student,
            lambda running, limit: (
                f"{seat.student.username} already runs {running} other workspace(s), the most allowed "
                f"is {limit}: ask them to stop one, then retry."
            ),
        )
        workspace = lifecycle.create_workspace(seat.student, sent.display, list(sent.apps.all()))
        if Seat.objects.filter(pk=seat.pk, state=SeatState.STARTING).update(workspace=workspace) != 1:
            transaction.set_rollback(True)
            return None
    seat.workspace = workspace
    return workspace


# --- the class's workspaces ----------------------------------------------------------


def class_workspaces(classroom: Classroom | int) -> QuerySet[Workspace]:
    """The students' workspaces that broadcasts of this class (or class id) started."""
    seats = members_seats(Seat.objects.filter(broadcast__classroom=classroom, workspace__isnull=False))
    return Workspace.objects.visible().filter(pk__in=seats.values("workspace_id"))


def stop_all(classroom: Classroom) -> int:
    """Stop every workspace the class's broadcasts started, and cancel the starts still queued."""
    # Seats first: a start under way sees its seat stopped and goes no further
    # (or, when its workspace exists already, that workspace is stopped below).
    moved = []
    for seat in members_seats(
        Seat.objects.filter(
            broadcast__classroom=classroom,
            state__in=[SeatState.QUEUED, SeatState.STARTING, SeatState.RUNNING],
        )
    ):
        message = "Cancelled: the class was stopped" if seat.state == SeatState.QUEUED else "Stopped"
        if Seat.objects.filter(pk=seat.pk, state=seat.state).update(state=SeatState.STOPPED, message=message):
            moved.append(seat.pk)
    stopped = 0
    for workspace in class_workspaces(classroom):
        try:
            lifecycle.stop(workspace)
            stopped += 1
        except lifecycle.WrongState:
            pass  # already stopped or stopping
    for seat in Seat.objects.filter(pk__in=moved).select_related("broadcast", "student", "workspace"):
        publish_seat(seat)
    return stopped


def student_workspace(classroom: Classroom, username: str) -> Workspace:
    """The newest broadcast workspace of one current student of the class (404 otherwise)."""
    seat = (
        Seat.objects.filter(
            broadcast__classroom=classroom,
            student__username=username.lower(),
            # A student who left the class is nobody's to watch any more.
            student__in=classroom.students.all(),
            workspace__isnull=False,
            workspace__deleting=False,
        )
        .select_related("workspace")
        .order_by("-broadcast__created")
        .first()
    )
    if seat is None:
        raise Http404("No workspace of that student in this classroom.")
    return seat.workspace


def member_seats_prefetch() -> Prefetch:
    """A broadcast's seats as its teachers see them: the students still in the class."""
    return Prefetch("seats", queryset=members_seats(Seat.objects.select_related("student", "workspace")))


def latest_broadcast(classroom: Classroom) -> Broadcast | None:
    return (
        classroom.broadcasts.select_related("display")
        .prefetch_related("apps", member_seats_prefetch())
        .first()
    )
