"""Classrooms: members, broadcasts of an environment, end and collect.

Only a classroom's teachers act on it; everyone else gets "not found" from the
views, which look classrooms up through ``teaching(user)``.
"""

from __future__ import annotations

import csv
import io
import posixpath
from collections.abc import Iterable

from django.db import transaction
from django.db.models import QuerySet

from . import lifecycle
from .catalog import launchable
from .models import (
    Broadcast,
    Classroom,
    Role,
    Seat,
    SeatState,
    User,
    Workspace,
)


class ClassroomError(ValueError):
    """Bad input (HTTP 400)."""


def teaching(user: User) -> QuerySet[Classroom]:
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
    rows = [row for row in csv.reader(io.StringIO(text)) if row and row[0].strip()]
    if rows and rows[0][0].strip().lower() in ("username", "user", "login"):
        rows = rows[1:]
    return [row[0].strip() for row in rows]


def create(teacher: User, name: str, usernames: Iterable[str] = ()) -> Classroom:
    name = (name or "").strip()
    if not name:
        raise ClassroomError("Give the classroom a name.")
    students = students_by_name(usernames)
    with transaction.atomic():
        classroom = Classroom.objects.create(name=name[:80])
        classroom.teachers.add(teacher)
        classroom.students.add(*students)
    return classroom


def add_students(classroom: Classroom, usernames: Iterable[str]) -> list[User]:
    students = students_by_name(usernames)
    classroom.students.add(*students)
    return students


def add_teacher(classroom: Classroom, username: str) -> User:
    user = User.objects.filter(username__iexact=(username or "").strip()).first()
    if user is None or user.role != Role.TEACHER:
        raise ClassroomError(f"'{username}' is not a teacher account.")
    classroom.teachers.add(user)
    return user


def join(student: User, code: str) -> Classroom:
    classroom = Classroom.objects.filter(join_code=(code or "").strip().upper()).first()
    if classroom is None:
        raise ClassroomError("That join code does not match a classroom. Check it with your teacher.")
    if student.role != Role.STUDENT:
        raise ClassroomError("Only student accounts join classrooms with a code.")
    classroom.students.add(student)
    return classroom


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
    from .tasks import run_broadcast

    apps = list(apps)
    # The teacher picks from what they may launch (the catalog and their own
    # saved images); the students get it because the teacher sent it.
    display_image, app_images = lifecycle.pick_images(launchable(teacher), display, apps)
    files = check_files_path(files)
    students = list(classroom.students.all())
    if not students:
        raise ClassroomError("The classroom has no students yet: add some first.")
    with transaction.atomic():
        sent = Broadcast.objects.create(
            classroom=classroom, teacher=teacher, display=display_image, files=files
        )
        sent.apps.set(app_images)
        Seat.objects.bulk_create([Seat(broadcast=sent, student=s) for s in students])
        transaction.on_commit(lambda: run_broadcast.delay(sent.pk))
    return sent


def retry(seat: Seat) -> None:
    from .tasks import start_seat

    if (
        Seat.objects.filter(pk=seat.pk, state=SeatState.FAILED).update(
            state=SeatState.QUEUED, message="Queued"
        )
        != 1
    ):
        raise lifecycle.WrongState("Only a failed student's start can be retried.")
    transaction.on_commit(lambda: start_seat.delay(seat.pk))


def class_workspaces(classroom: Classroom) -> QuerySet[Workspace]:
    """The students' workspaces that broadcasts of this class started."""
    ids = Seat.objects.filter(broadcast__classroom=classroom, workspace__isnull=False).values("workspace_id")
    return Workspace.objects.visible().filter(pk__in=ids)


def stop_all(classroom: Classroom) -> int:
    stopped = 0
    for workspace in class_workspaces(classroom):
        try:
            lifecycle.stop(workspace)
            stopped += 1
        except lifecycle.WrongState:
            pass  # already stopped or stopping
    return stopped


def student_workspace(classroom: Classroom, username: str) -> Workspace:
    """The newest broadcast workspace of one student of the class (404 otherwise)."""
    from django.http import Http404

    seat = (
        Seat.objects.filter(
            broadcast__classroom=classroom,
            student__username=username.lower(),
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


def latest_broadcast(classroom: Classroom) -> Broadcast | None:
    return classroom.broadcasts.select_related("display").prefetch_related("apps").first()
