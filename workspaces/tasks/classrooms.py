"""Broadcasts to a class (bounded concurrency), and collecting its files."""

from __future__ import annotations

import logging

from celery import shared_task
from django.db import transaction

from ..engine.base import EngineError
from ..lib.engine_access import backend
from ..models import (
    Classroom,
    Job,
    JobState,
    Workspace,
    WorkspaceState,
)
from ..services import broadcasts, file_copies, jobs, lifecycle
from ..services.failures import failure_message
from .common import job_task

logger = logging.getLogger(__name__)


@shared_task(name="workspaces.tasks.classroom.run_broadcast")
def run_broadcast(broadcast_id: int) -> None:
    """Queue a start for every queued seat of a broadcast (services/broadcasts.send_seats)."""
    broadcasts.send_seats(broadcast_id)


@shared_task(name=broadcasts.START_SEAT)
def start_seat(seat_id: int, deadline: float | None = None) -> None:
    """One student's part of a broadcast (services/broadcasts.start_seat)."""
    broadcasts.start_seat(seat_id, deadline)


@job_task(name="workspaces.tasks.classroom.collect_classroom")
def collect_classroom(job: Job, classroom_id: int) -> None:
    """Copy each student's /data/<class>/ into the teacher's /data/collected/<class>/<student>/.

    One student's files never stop the others, and the job always ends: done
    (with what was and was not collected from whom), or failed when nothing
    could be collected at all.
    """
    report: dict[str, dict] = {}
    students: list = []
    try:
        classroom = Classroom.objects.get(pk=classroom_id)
        students = list(classroom.students.order_by("username"))
        for index, student in enumerate(students):
            jobs.report(job, int(100 * index / max(len(students), 1)), f"Collecting from {student.username}")
            report[student.username] = _collect_from(student, classroom, job.owner)
    except Exception as exc:
        message = failure_message(exc, "Collecting")
        jobs.finish(job, JobState.FAILED, f"Collecting stopped: {message}", report)
        return
    failed = [name for name, outcome in report.items() if not outcome["ok"]]
    message = f"Collected from {len(students) - len(failed)} of {len(students)} students" + (
        f"; not all from {', '.join(failed)}." if failed else "."
    )
    nothing = failed and len(failed) == len(students) and not any(o["files"] for o in report.values())
    jobs.finish(job, JobState.FAILED if nothing else JobState.DONE, message, report)


# How many skipped files a collect lists per student (all are counted).
SKIPPED_LISTED = 100


def _collect_from(student, classroom: Classroom, teacher) -> dict:
    """One student's part of a collect: what was copied (checked by sha256), skipped, not copied."""
    target = f"collected/{classroom.folder}/{student.username}"
    try:
        files = file_copies.copy_folder(student, classroom.folder, teacher, target)
    except Exception as exc:  # this student's files, whatever they hold, never stop the others
        return {
            "ok": False,
            "files": 0,
            "detail": failure_message(exc, "Collecting"),
            "skipped": [],
            "skipped_count": 0,
            "failed": [],
        }
    good = file_copies.verified(files)
    skipped = [f for f in files if f["status"] == "skipped"]
    failed = [f["path"] for f in file_copies.not_copied(files)]
    detail = "verified by sha256"
    if skipped:
        detail += f"; {len(skipped)} skipped (links, pipes, sockets and devices are not collected)"
    if failed:
        detail += f"; not copied: {', '.join(failed[:10])}" + (" …" if len(failed) > 10 else "")
    return {
        "ok": not failed,
        "files": len(good),
        "detail": detail[:1000],
        # The first SKIPPED_LISTED only: a student's 100k links must not bloat the job's row.
        "skipped": [{"path": f["path"], "detail": f["detail"]} for f in skipped[:SKIPPED_LISTED]],
        "skipped_count": len(skipped),
        "failed": failed,
    }


# How often a password rotation waits for a start or stop under way to end.
ROTATE_TRIES = 24
ROTATE_POLL = 5


@shared_task(name="workspaces.tasks.classroom.rotate_vnc_passwords")
def rotate_vnc_passwords(workspace_id: int, tries: int = 0) -> None:
    """New VNC passwords for a workspace: a control session or a demo of it ended.

    A running display takes them at once (Xvnc reads its password file at
    every authentication), so the old ones open nothing from now on; a
    stopped one gets them at its next start (a display whose passwords
    changed is made anew). The row is locked meanwhile, so a stop or a start
    never reads passwords the display does not have.
    """
    password, view_password = lifecycle.new_vnc_password(), lifecycle.new_vnc_password()
    with transaction.atomic():
        rows = Workspace.objects.filter(pk=workspace_id, deleting=False)
        current = rows.select_for_update().values("state", "engine_id").first()
        if current is None:
            return
        if current["state"] == WorkspaceState.RUNNING:
            try:
                backend().set_vnc_passwords(current["engine_id"], password, view_password)
            except EngineError as exc:
                logger.warning("workspace %s: VNC passwords not rotated: %s", workspace_id, exc)
                return
        elif current["state"] not in (WorkspaceState.STOPPED, WorkspaceState.FAILED):
            # A start or stop is under way and owns the display: again once it is over.
            if tries < ROTATE_TRIES:
                transaction.on_commit(
                    lambda: rotate_vnc_passwords.apply_async((workspace_id, tries + 1), countdown=ROTATE_POLL)
                )
            return
        rows.update(vnc_password=password, vnc_view_password=view_password)
