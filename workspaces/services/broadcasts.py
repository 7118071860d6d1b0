"""Broadcasts: one environment to a whole class, a seat per student, each seat its own start.

The seats' state machine lives here: queued -> starting (a start slot
claimed, one attempt more) -> running, failed or stopped; a seat whose
worker died is queued again by reconcile (recover_seats), one recovery
counted. The tasks (workspaces/tasks/classrooms.py) call these with an id.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from celery import current_app
from django.db.models import Exists, F, OuterRef, QuerySet

from .. import leases
from ..engine.base import EngineError
from ..lib import queue
from ..models import Broadcast, BroadcastState, Seat, SeatState, Workspace, WorkspaceState
from . import classrooms, file_copies, lifecycle, teaching
from .backups import BackupError

logger = logging.getLogger(__name__)

START_SEAT = "workspaces.tasks.classroom.start_seat"


def _seat_update(seat: Seat, **fields) -> bool:
    """Move a seat whose start is under way; False when "stop all" stopped it meanwhile."""
    return classrooms.move_seat(seat, [SeatState.STARTING], **fields)


def _fail_seat(seat_id: int, message: str) -> None:
    seat = Seat.objects.filter(pk=seat_id).select_related("broadcast", "student", "workspace").first()
    if seat is not None:
        classrooms.move_seat(
            seat, [SeatState.QUEUED, SeatState.STARTING], state=SeatState.FAILED, message=message[:300]
        )


# How long a seat may wait, in all, for a start slot while other starts hold
# them all; it waits in the broker (re-queued every SLOT_POLL seconds), never
# in a worker thread. The wait is a deadline (a time), not a count of polls:
# a broker that delivers late must not stretch it.
SLOT_WAIT = 1800
SLOT_POLL = 5.0
# Eager mode (CELERY_TASK_ALWAYS_EAGER, tests and development) has no broker to
# wait in: the seat waits inline, checking this often.
EAGER_POLL = 0.1


def send_seats(broadcast_id: int) -> None:
    """Queue a start for every queued seat of a broadcast (the task run_broadcast).

    At most LATTICE_BROADCAST_CONCURRENCY starts run at once across the whole
    site (each start_seat holds one of classrooms.StartSlots): a class of 30
    must not become 30 simultaneous container starts on a 2-core machine, nor
    two classes twice the bound. A seat that finds no free slot goes back to
    the queue for a moment rather than holding a worker thread.
    """
    broadcast = Broadcast.objects.filter(pk=broadcast_id).first()
    if broadcast is None:
        return
    Broadcast.objects.filter(pk=broadcast_id).update(state=BroadcastState.RUNNING)
    seats = list(
        Seat.objects.filter(broadcast=broadcast, state=SeatState.QUEUED).values_list("pk", flat=True)
    )
    for seat_id in seats:
        try:
            queue.now(START_SEAT, seat_id)
        except Exception as exc:  # one student's failure never stops the others
            logger.exception("broadcast %s: seat %s", broadcast_id, seat_id)
            _fail_seat(seat_id, f"Could not start: {exc}")
    _finish_if_over(broadcast_id)


def _end_if_over(broadcasts: QuerySet[Broadcast]) -> int:
    """Those of ``broadcasts`` none of whose seats waits or starts are done; how many this ended.

    One conditional update: a seat queued meanwhile keeps its broadcast open.
    """
    waiting = Seat.objects.filter(broadcast=OuterRef("pk"), state__in=[SeatState.QUEUED, SeatState.STARTING])
    return broadcasts.exclude(Exists(waiting)).update(state=BroadcastState.DONE)


def _finish_if_over(broadcast_id: int) -> int:
    """The broadcast is done once none of its seats waits or starts; 1 when this call ended it."""
    return _end_if_over(Broadcast.objects.filter(pk=broadcast_id).exclude(state=BroadcastState.DONE))


def start_seat(seat_id: int, deadline: float | None = None) -> None:
    """One student's part (the task start_seat), from a broadcast, a retry or recovery: a start slot, the starter files,
    the workspace.

    ``deadline`` (a Unix time) is when the seat stops waiting for a slot; the
    first call sets it SLOT_WAIT from now. Safe to run twice: the seat is
    claimed by a conditional update, and a run that takes up a seat whose
    worker died (reconcile queued it again) goes on from where the row says
    the last run got to.
    """
    if deadline is None or deadline < SLOT_WAIT * 1000:
        # None, or a message of the previous version, which counted seconds waited.
        deadline = time.time() + SLOT_WAIT - (deadline or 0.0)
    slots = classrooms.StartSlots()
    slot = classrooms.seat_slot(seat_id)
    while True:
        seat = Seat.objects.filter(pk=seat_id, state=SeatState.QUEUED).values("broadcast_id").first()
        if seat is None:
            return  # cancelled by "stop all", started already, or another worker is on it
        if slots.try_acquire(slot):
            break
        if time.time() >= deadline:
            _fail_seat(seat_id, "Other classes' starts kept the engine busy; retry in a moment.")
            _finish_if_over(seat["broadcast_id"])
            return
        if not _eager():
            # Back to the broker: the worker thread is free meanwhile. The
            # lease says the message is alive; if this worker dies holding
            # it, the lease lapses and reconcile sends the seat again.
            Seat.objects.filter(pk=seat_id, state=SeatState.QUEUED).update(
                leased_until=leases.lease_end() + timedelta(seconds=SLOT_POLL)
            )
            queue.task(START_SEAT).apply_async((seat_id, deadline), countdown=SLOT_POLL)
            return
        time.sleep(EAGER_POLL)  # inline, not a nested task per poll

    generation = _claim_seat(seat_id)
    if generation is None:
        return  # another run claimed it (it holds the slot), or it was stopped meanwhile
    held = Seat.objects.filter(pk=seat_id, state=SeatState.STARTING, recoveries=generation)

    def renew() -> None:
        if held.update(leased_until=leases.lease_end()):
            slots.refresh(slot)

    try:
        with leases.Renewing(renew, f"seat {seat_id}", at_most=2 * lifecycle.start_deadline()):
            _start_seat(seat_id, lambda: slots.refresh(slot))
    except Exception as exc:
        logger.exception("seat %s failed to start", seat_id)
        _fail_seat(seat_id, f"Could not start: {exc}")
    finally:
        slots.release(slot)
        _finish_if_over(seat["broadcast_id"])


def _eager() -> bool:
    return bool(current_app.conf.task_always_eager)


def _claim_seat(seat_id: int) -> int | None:
    """Queued -> starting, one more attempt; the claim's generation (its recoveries), None when
    someone else claimed it or it was stopped."""
    rows = Seat.objects.filter(pk=seat_id, state=SeatState.QUEUED)
    generation = rows.values_list("recoveries", flat=True).first()
    if generation is None:
        return None
    message = "Starting again (the worker had stopped)" if generation else "Starting"
    claimed = rows.filter(recoveries=generation).update(
        state=SeatState.STARTING, leased_until=leases.lease_end(), message=message, attempts=F("attempts") + 1
    )
    return generation if claimed else None


def _start_seat(seat_id: int, still_working) -> None:
    seat = Seat.objects.select_related(
        "broadcast__classroom", "broadcast__display", "broadcast__teacher", "student", "workspace"
    ).get(pk=seat_id)
    classrooms.publish_seat(seat)
    sent = seat.broadcast
    if not classrooms.is_member(sent.classroom_id, seat.student_id):
        # Left since the broadcast (or the retry): nothing of the class is made or copied for them.
        _seat_update(seat, state=SeatState.FAILED, message=classrooms.LEFT)
        return
    ws = seat.workspace
    if ws is None:
        # The first run, or one whose worker died before the workspace was made.
        ws = _make_seat_workspace(seat, still_working)
        if ws is None:
            return
    elif not _seat_update(seat, message="Starting the workspace"):
        return
    lifecycle.start_now(ws.pk, still_working)  # a restore and the engine start renew the slot as they go
    ws = _wait_for_start(ws.pk)
    seat.workspace = ws
    if ws is not None and not ws.deleting and ws.state == WorkspaceState.RUNNING:
        if _seat_update(seat, state=SeatState.RUNNING, message="Running"):
            teaching.notify_opened(seat)
    elif ws is not None and ws.state == WorkspaceState.FAILED:
        _seat_update(seat, state=SeatState.FAILED, message=ws.message or "The workspace did not start.")
    else:
        _seat_update(seat, state=SeatState.STOPPED, message="Stopped before it was ready")


def _make_seat_workspace(seat: Seat, still_working) -> Workspace | None:
    """Copy the starter files, make room, then the seat's workspace row; None when the seat ended."""
    sent = seat.broadcast
    if sent.files:
        # Before the start, so the files are there when the student's apps open.
        # Run twice (a worker died), the copy replaces nothing: files already
        # there are "same".
        if not _seat_update(seat, message="Copying the starter files"):
            return None
        try:
            files = file_copies.copy_folder(sent.teacher, sent.files, seat.student, sent.classroom.folder)
        except (EngineError, BackupError) as exc:
            _seat_update(seat, state=SeatState.FAILED, message=str(exc))
            return None
        statuses = [f["status"] for f in files]
        seat.files = {status: statuses.count(status) for status in ("copied", "beside", "same")}
    classrooms.make_room(seat)
    still_working()
    try:
        ws = classrooms.create_seat_workspace(seat)
    except lifecycle.OverLimit as exc:
        _seat_update(seat, state=SeatState.FAILED, message=str(exc), files=seat.files)
        return None
    if ws is None or not _seat_update(seat, files=seat.files, message="Starting the workspace"):
        return None  # stopped meanwhile; "stop all" stops the workspace too
    return ws


def _wait_for_start(workspace_id: int) -> Workspace | None:
    """The workspace once no start is under way on it.

    Usually at once: spawn_workspace ran here. When another run holds the
    start (reconcile sent it too, after a worker died), wait for that one,
    as long as a start may take; the seat's lease is renewed meanwhile.
    """
    deadline = time.monotonic() + lifecycle.start_deadline()
    while True:
        ws = Workspace.objects.filter(pk=workspace_id).first()
        busy = ws is not None and ws.state in (WorkspaceState.PENDING, WorkspaceState.STARTING)
        if not busy or time.monotonic() > deadline:
            return ws
        time.sleep(0.5)


def recover_seats() -> int:
    """Send again the start of every queued or starting seat whose lease lapsed; how many.

    Queued: its message was lost (a worker died holding it). Starting: its
    worker died; the seat is queued again with one more recovery counted,
    and the next run goes on from where it got to (at most
    LATTICE_MAX_RECOVERIES times, then the seat fails with the reason, and
    the teacher may retry it). Both are moved by a conditional update on the
    lease they had, so two passes at once send a seat once.
    """
    sent = 0
    lapsed = Seat.objects.filter(leases.lapsed(), state__in=[SeatState.QUEUED, SeatState.STARTING])
    for seat in lapsed.select_related("broadcast", "student", "workspace"):
        if seat.state == SeatState.STARTING and seat.recoveries >= leases.max_recoveries():
            classrooms.move_seat(
                seat,
                [SeatState.STARTING],
                state=SeatState.FAILED,
                message=f"The start was interrupted {seat.recoveries + 1} times (its worker stopped); retry it.",
            )
            _finish_if_over(seat.broadcast_id)
            continue
        again = {"state": SeatState.QUEUED, "leased_until": leases.lease_end()}
        if seat.state == SeatState.STARTING:
            again.update(message="Queued again (the worker had stopped)", recoveries=F("recoveries") + 1)
        if not Seat.objects.filter(pk=seat.pk, state=seat.state, leased_until=seat.leased_until).update(
            **again
        ):
            continue  # another pass sent it
        queue.now(START_SEAT, seat.pk)
        sent += 1
    return sent


def finish_broadcasts() -> int:
    """End broadcasts none of whose seats waits or starts (their last seat's task died); how many."""
    return _end_if_over(Broadcast.objects.filter(state__in=[BroadcastState.QUEUED, BroadcastState.RUNNING]))
