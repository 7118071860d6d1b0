"""Broadcasts to a class (bounded concurrency), and collecting its files."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

from celery import shared_task
from django.conf import settings
from django.db import connections
from django.db.models import F

from .. import (
    classrooms,
    file_copies,
    jobs,
    lifecycle,
    teaching,
)
from ..backups import BackupError
from ..engine.base import EngineError
from ..models import (
    Broadcast,
    BroadcastState,
    Classroom,
    JobState,
    Seat,
    SeatState,
    Workspace,
    WorkspaceState,
)
from .common import failure_message
from .workspace import spawn_workspace

logger = logging.getLogger(__name__)


def _seat_update(seat: Seat, **fields) -> bool:
    """Move a seat whose start is under way; False when "stop all" stopped it meanwhile."""
    return classrooms.move_seat(seat, [SeatState.STARTING], **fields)


def _fail_seat(seat_id: int, message: str) -> None:
    seat = Seat.objects.filter(pk=seat_id).select_related("broadcast", "student", "workspace").first()
    if seat is not None:
        classrooms.move_seat(
            seat, [SeatState.QUEUED, SeatState.STARTING], state=SeatState.FAILED, message=message[:300]
        )


# How long a seat waits for a start slot while other classes' starts hold them all.
SLOT_WAIT = 1800


@shared_task
def run_broadcast(broadcast_id: int) -> None:
    """Start every queued seat of a broadcast.

    At most LATTICE_BROADCAST_CONCURRENCY starts run at once across the whole
    site (each start_seat holds one of classrooms.StartSlots): a class of 30
    must not become 30 simultaneous container starts on a 2-core machine, nor
    two classes twice the bound.
    """
    broadcast = Broadcast.objects.filter(pk=broadcast_id).first()
    if broadcast is None:
        return
    Broadcast.objects.filter(pk=broadcast_id).update(state=BroadcastState.RUNNING)
    seats = list(
        Seat.objects.filter(broadcast=broadcast, state=SeatState.QUEUED).values_list("pk", flat=True)
    )
    with ThreadPoolExecutor(max_workers=settings.LATTICE_BROADCAST_CONCURRENCY) as pool:
        for result in pool.map(_start_seat_in_thread, seats):
            if isinstance(result, Exception):  # one student's failure never stops the others
                logger.error("broadcast %s: %s", broadcast_id, result)
    Broadcast.objects.filter(pk=broadcast_id).update(state=BroadcastState.DONE)


def _start_seat_in_thread(seat_id: int) -> Exception | None:
    try:
        start_seat(seat_id)
    except Exception as exc:
        _fail_seat(seat_id, f"Could not start: {exc}")  # the grid shows it, with Retry
        return exc
    finally:
        connections.close_all()  # this thread's own database connection
    return None


@shared_task
def start_seat(seat_id: int) -> None:
    """One student's part, from a broadcast or a retry: a start slot, the starter files, the workspace."""
    if not Seat.objects.filter(pk=seat_id, state=SeatState.QUEUED).exists():
        return  # cancelled by "stop all", or started already
    slots = classrooms.StartSlots()
    slot = classrooms.seat_slot(seat_id)
    if not slots.acquire(slot, wait=SLOT_WAIT):
        _fail_seat(seat_id, "Other classes' starts kept the engine busy; retry in a moment.")
        return
    try:
        _start_seat(seat_id, lambda: slots.refresh(slot))
    except Exception as exc:
        logger.exception("seat %s failed to start", seat_id)
        _fail_seat(seat_id, f"Could not start: {exc}")
        raise
    finally:
        slots.release(slot)


def _start_seat(seat_id: int, still_working) -> None:
    if (
        Seat.objects.filter(pk=seat_id, state=SeatState.QUEUED).update(
            state=SeatState.STARTING, message="Starting", attempts=F("attempts") + 1
        )
        != 1
    ):
        return
    seat = Seat.objects.select_related(
        "broadcast__classroom", "broadcast__display", "broadcast__teacher", "student"
    ).get(pk=seat_id)
    classrooms.publish_seat(seat)
    sent = seat.broadcast
    if sent.files:
        # Before the start, so the files are there when the student's apps open.
        if not _seat_update(seat, message="Copying the starter files"):
            return
        try:
            files = file_copies.copy_folder(sent.teacher, sent.files, seat.student, sent.classroom.folder)
        except (EngineError, BackupError) as exc:
            _seat_update(seat, state=SeatState.FAILED, message=str(exc))
            return
        statuses = [f["status"] for f in files]
        seat.files = {status: statuses.count(status) for status in ("copied", "beside", "same")}
    classrooms.make_room(seat)
    still_working()
    try:
        ws = classrooms.create_seat_workspace(seat)
    except lifecycle.OverLimit as exc:
        _seat_update(seat, state=SeatState.FAILED, message=str(exc), files=seat.files)
        return
    if ws is None or not _seat_update(seat, files=seat.files, message="Starting the workspace"):
        return  # stopped meanwhile; "stop all" stops the workspace too
    spawn_workspace(ws.pk, still_working)  # a restore and the engine start renew the slot as they go
    ws = Workspace.objects.filter(pk=ws.pk).first()
    seat.workspace = ws
    if ws is not None and not ws.deleting and ws.state == WorkspaceState.RUNNING:
        if _seat_update(seat, state=SeatState.RUNNING, message="Running"):
            teaching.notify_opened(seat)
    elif ws is not None and ws.state == WorkspaceState.FAILED:
        _seat_update(seat, state=SeatState.FAILED, message=ws.message or "The workspace did not start.")
    else:
        _seat_update(seat, state=SeatState.STOPPED, message="Stopped before it was ready")


@shared_task
def collect_classroom(job_id: int, classroom_id: int) -> None:
    """Copy each student's /data/<class>/ into the teacher's /data/collected/<class>/<student>/.

    One student's files never stop the others, and the job always ends: done
    (with what was and was not collected from whom), or failed when nothing
    could be collected at all.
    """
    job = jobs.claim(job_id)
    if job is None:
        return
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
            "failed": [],
        }
    good = file_copies.verified(files)
    skipped = [{"path": f["path"], "detail": f["detail"]} for f in files if f["status"] == "skipped"]
    failed = [f["path"] for f in files if f["status"] != "skipped" and f not in good]
    detail = "verified by sha256"
    if skipped:
        detail += f"; {len(skipped)} skipped (links, pipes, sockets and devices are not collected)"
    if failed:
        detail += f"; not copied: {', '.join(failed[:10])}" + (" …" if len(failed) > 10 else "")
    return {
        "ok": not failed,
        "files": len(good),
        "detail": detail[:1000],
        "skipped": skipped,
        "failed": failed,
    }
