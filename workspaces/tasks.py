"""Celery tasks: thin, idempotent, reload by id, publish progress."""

from __future__ import annotations

import logging
import re
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.db import connections
from django.db.models import F, QuerySet
from django.utils import timezone

from . import (
    admin_catalog,
    backups,
    classrooms,
    display_tokens,
    jobs,
    lifecycle,
    saving,
    services_health,
    teaching,
    thumbnails,
)
from .engine.base import EngineError
from .engine_access import backend
from .events import class_group, publish, publish_group
from .models import (
    Broadcast,
    BroadcastState,
    Classroom,
    Image,
    ImageState,
    Job,
    JobState,
    Seat,
    SeatState,
    User,
    Workspace,
    WorkspaceState,
)

logger = logging.getLogger(__name__)


@shared_task
def run_diagnostics(job_id: int) -> None:
    """Check every service a workspace needs, one step at a time, for the user to see."""
    job = jobs.claim(job_id)
    if job is None:
        return
    steps = [
        ("database", services_health.database_problem),
        ("Redis", services_health.redis_problem),
        ("Docker engine", services_health.docker_problem),
        ("backup storage", services_health.object_storage_problem),
    ]
    results = {}
    try:
        for index, (name, probe) in enumerate(steps):
            jobs.report(job, int(100 * index / len(steps)), f"Checking the {name}…")
            started = time.monotonic()
            problem = probe()
            results[name] = {
                "ok": problem is None,
                "detail": problem or "reachable",
                "ms": round(1000 * (time.monotonic() - started), 1),
            }
    except Exception as exc:
        # Whatever broke (a probe, Redis, the time limit), the page must not
        # wait forever on a job that stays "running".
        logger.exception("diagnostics job %s failed", job_id)
        message = f"The check stopped: {type(exc).__name__}: {exc}"[:300]  # the column's length
        jobs.finish(job, JobState.FAILED, message, results)
        return
    failed = [name for name, outcome in results.items() if not outcome["ok"]]
    if failed:
        jobs.finish(job, JobState.FAILED, f"Not reachable: {', '.join(failed)}.", results)
    else:
        jobs.finish(job, JobState.DONE, "Everything Lattice needs is reachable.", results)


# --- workspaces -----------------------------------------------------------------


def _workspace_event(ws: Workspace) -> dict:
    return {
        "type": "workspace",
        "id": ws.pk,
        "state": ws.state,
        "progress": ws.progress,
        "message": ws.message,
        "containers": ws.engine_state.get("containers", []),
    }


def _announce(ws: Workspace) -> None:
    """To the owner, and to the teachers of a class whose broadcast started it."""
    event = _workspace_event(ws)
    publish(ws.owner_id, event)
    classroom_id = getattr(ws, "_classroom_id", None)
    if classroom_id is None:
        seat = (
            Seat.objects.filter(workspace=ws).values("broadcast__classroom_id", "student__username").first()
        )
        classroom_id = ws._classroom_id = seat["broadcast__classroom_id"] if seat else 0
        ws._student = seat["student__username"] if seat else ""
    if classroom_id:
        publish_group(class_group(classroom_id), {**event, "type": "seat-workspace", "student": ws._student})


def _report(ws: Workspace, progress: int, message: str) -> None:
    """Progress of the work under way; dropped once a stop or delete took the workspace over."""
    if Workspace.objects.filter(pk=ws.pk, state=ws.state, deleting=False).move(
        progress=progress, message=message
    ):
        ws.progress, ws.message = progress, message
        _announce(ws)


def _settle(ws: Workspace, expected: str, state: str, message: str, **fields) -> bool:
    """Conditional move; False when someone (a stop, a delete) changed the state meanwhile."""
    changed = Workspace.objects.filter(pk=ws.pk, state=expected, deleting=False).move(
        state=state, message=message, **fields
    )
    if changed == 1:
        ws.refresh_from_db()
        _announce(ws)
    return changed == 1


def _containers(engine_id: str) -> list[dict]:
    try:
        return [{"name": c.name, "image": c.image, "state": c.state} for c in backend().containers(engine_id)]
    except EngineError:
        return []  # the engine is what failed; the message says so


def _failure(exc: BaseException, doing: str) -> str:
    """What the owner reads when engine work fails: the engine's own words, or that we broke."""
    if isinstance(exc, EngineError | backups.BackupError):
        return str(exc)[:300]
    logger.exception("%s failed", doing)
    return f"{doing} failed because of an error in Lattice ({type(exc).__name__}); try again."[:300]


@shared_task
def spawn_workspace(workspace_id: int) -> None:
    """Start a workspace's containers. While it runs, this task alone drives the
    engine for the workspace: a stop or delete that arrives meanwhile only marks
    the row, and is carried out here once the engine call returns."""
    claimed = Workspace.objects.filter(pk=workspace_id, state=WorkspaceState.PENDING, deleting=False).move(
        state=WorkspaceState.STARTING, progress=1, message="Starting"
    )
    if claimed != 1:
        return  # stopped, deleted or already claimed by another worker
    ws = Workspace.objects.select_related("owner", "display").get(pk=workspace_id)
    _announce(ws)
    try:
        spec = lifecycle.spec_for(ws)
        # On an engine without the owner's files (a new host), their newest backup comes first.
        backups.restore_if_missing(ws.owner, progress=lambda p, m: _report(ws, p, m))
        endpoint = backend().start(
            spec,
            progress=lambda p, m: _report(ws, p, m),
            timeout=settings.LATTICE_SPAWN_TIMEOUT,
        )
    except Exception as exc:
        # Whatever broke, the workspace must not stay "starting": the user
        # reads why, and may start it again.
        message = _failure(exc, "Starting the workspace")
        logger.warning("workspace %s failed to start: %s", workspace_id, message)
        engine_state = {"containers": _containers(ws.engine_id)}
        if not _settle(
            ws, WorkspaceState.STARTING, WorkspaceState.FAILED, message, engine_state=engine_state
        ):
            _carry_out_interruption(workspace_id)
        return
    # start() returned, so every container of the spec runs: no need to ask the engine.
    engine_state = {
        "endpoint": {"path": endpoint.path},
        "containers": [{"name": c.name, "image": c.image, "state": "running"} for c in spec.containers],
    }
    if not _settle(
        ws,
        WorkspaceState.STARTING,
        WorkspaceState.RUNNING,
        "Running",
        progress=100,
        engine_state=engine_state,
    ):
        _carry_out_interruption(workspace_id)


def _carry_out_interruption(workspace_id: int) -> None:
    """A stop or delete arrived during the start: do it now that the start is over."""
    ws = Workspace.objects.filter(pk=workspace_id).first()
    if ws is None:
        return
    if ws.deleting:
        remove_workspace(workspace_id)
    elif ws.state == WorkspaceState.STOPPING:
        stop_workspace(workspace_id)


@shared_task
def stop_workspace(workspace_id: int) -> None:
    ws = Workspace.objects.filter(pk=workspace_id, state=WorkspaceState.STOPPING, deleting=False).first()
    if ws is None:
        return
    _report(ws, 50, "Stopping containers")
    try:
        backend().stop(ws.engine_id)
    except Exception as exc:
        # Left failed, not stopping: the user may stop it again, and the
        # reconcile looks at it with the engine's own eyes.
        engine_state = {"containers": _containers(ws.engine_id)}
        message = "Could not stop: " + _failure(exc, "Stopping the workspace")
        _settle(ws, WorkspaceState.STOPPING, WorkspaceState.FAILED, message[:300], engine_state=engine_state)
        return
    engine_state = {"containers": _containers(ws.engine_id)}
    if _settle(
        ws, WorkspaceState.STOPPING, WorkspaceState.STOPPED, "Stopped", progress=0, engine_state=engine_state
    ):
        # Stopped, the files are still: the moment for a consistent backup.
        back_up.delay(ws.owner_id, "stopped")


@shared_task
def remove_workspace(workspace_id: int) -> None:
    ws = Workspace.objects.filter(pk=workspace_id, deleting=True).first()
    if ws is None:
        return
    try:
        backend().remove(ws.engine_id)  # never the data volume
    except Exception as exc:
        # The row stays, marked for deletion: the reconcile tries again.
        message = "Could not delete yet: " + _failure(exc, "Deleting the workspace")
        Workspace.objects.filter(pk=workspace_id).move(message=message[:300])
        publish(ws.owner_id, {**_workspace_event(ws), "message": message})
        return
    Workspace.objects.filter(pk=workspace_id).delete()
    publish(
        ws.owner_id,
        {"type": "workspace", "id": workspace_id, "state": "deleted", "progress": 100, "message": "Deleted"},
    )


def _stuck(states: list[str], deleting: bool = False) -> QuerySet[Workspace]:
    """Rows in a passing state for longer than any start could take: their task is gone."""
    limit = timezone.now() - timedelta(seconds=settings.LATTICE_SPAWN_TIMEOUT + 120)
    return Workspace.objects.filter(state__in=states, deleting=deleting, updated__lt=limit)


# --- backups of data volumes ----------------------------------------------------


@shared_task
def back_up(user_id: int, reason: str, job_id: int | None = None) -> None:
    """Back up one user's data volume; with a job, the user follows it on their page."""
    job = jobs.claim(job_id) if job_id is not None else None
    if job_id is not None and job is None:
        return
    user = User.objects.get(pk=user_id)
    progress = (lambda p, m: jobs.report(job, p, m)) if job else (lambda p, m: None)
    client = lifecycle.redis_client()
    lock = f"lattice:backing-up:{user_id}"
    # One backup of a user at a time: a stop and the schedule may ask at once.
    if not client.set(lock, "1", nx=True, ex=3600):
        if job:
            jobs.finish(job, JobState.FAILED, "A backup of your files is already under way; try again later.")
        return
    try:
        snapshot = backups.back_up(user, reason, progress)
    except Exception as exc:
        message = _failure(exc, "The backup")
        logger.warning("backup of %s failed: %s", user.username, message)
        if job:
            jobs.finish(job, JobState.FAILED, message)
        return
    finally:
        client.delete(lock)
    if job:
        jobs.finish(
            job,
            JobState.DONE,
            f"Your files are backed up ({snapshot.size / 1024**2:.1f} MiB).",
            {"created": snapshot.created.isoformat(), "size": snapshot.size},
        )


@shared_task
def back_up_due() -> int:
    """The schedule: everyone whose files may have changed since their last backup."""
    owners = backups.due()
    for user in owners:
        back_up.delay(user.pk, "schedule")
    return len(owners)


@shared_task
def capture_thumbnail(workspace_id: int) -> None:
    """One picture of a running screen for the class grid (see thumbnails.py)."""
    try:
        ws = Workspace.objects.filter(pk=workspace_id, state=WorkspaceState.RUNNING).first()
        if ws is not None:
            thumbnails.store(ws.pk, thumbnails.capture(ws))
    except lifecycle.WrongState as exc:
        logger.info("no thumbnail of workspace %s: %s", workspace_id, exc)
    finally:
        thumbnails.captured(workspace_id)


@shared_task
def expire_control() -> int:
    """End teachers' control of screens whose viewer page went away without a word."""
    return teaching.expire_control_sessions()


@shared_task
def reconcile() -> dict:
    """Bring the database and the engine's labels together.

    Running rows whose containers died become failed; rows whose task died
    (a worker killed mid-start, mid-stop, mid-delete) are taken up again;
    workspaces the engine has but the database does not (a crash between the
    two) are removed.
    """
    # What needs no engine first: the engine may be the thing that is down.
    fixed = {
        "failed": 0,
        "orphans": 0,
        "resumed": 0,
        "stale_saves": saving.fail_stale_saves(saving.STALE_SAVE_SECONDS),
        "stale_jobs": jobs.fail_stale(jobs.stale_job_seconds()),
        "stale_seats": classrooms.fail_stale_seats(),
    }
    engine = backend().list_workspaces()
    for ws in Workspace.objects.filter(state=WorkspaceState.RUNNING, deleting=False):
        if engine.get(ws.engine_id) != "running" and _settle(
            ws,
            WorkspaceState.RUNNING,
            WorkspaceState.FAILED,
            "The workspace's containers stopped unexpectedly; start it again.",
            engine_state={"containers": _containers(ws.engine_id)},
        ):
            display_tokens.revoke(lifecycle.redis_client(), ws.pk)
            fixed["failed"] += 1
    for ws in _stuck([WorkspaceState.PENDING]):
        spawn_workspace.delay(ws.pk)  # its message was lost
        fixed["resumed"] += 1
    for ws in _stuck([WorkspaceState.STARTING]):
        if Workspace.objects.filter(pk=ws.pk, state=WorkspaceState.STARTING, deleting=False).move(
            state=WorkspaceState.STOPPING, message="The start was interrupted; stopping what it began."
        ):
            stop_workspace.delay(ws.pk)
            fixed["resumed"] += 1
    for ws in _stuck([WorkspaceState.STOPPING]):
        stop_workspace.delay(ws.pk)
        fixed["resumed"] += 1
    for ws in _stuck(WorkspaceState.values, deleting=True):
        remove_workspace.delay(ws.pk)
        fixed["resumed"] += 1
    known = set(Workspace.objects.values_list("engine_id", flat=True))
    for engine_id in set(engine) - known:
        backend().remove(engine_id)
        fixed["orphans"] += 1
    return fixed


# --- saved images ---------------------------------------------------------------


def _image_report(image: Image, progress: int, message: str) -> None:
    image.message = message
    Image.objects.filter(pk=image.pk, state=ImageState.SAVING).update(message=message)
    publish(image.owner_id, saving.image_event(image, progress))


def _save_failure(exc: BaseException) -> str:
    """What the owner reads when a save fails."""
    from celery.exceptions import SoftTimeLimitExceeded

    if isinstance(exc, EngineError):
        return str(exc)
    if isinstance(exc, SoftTimeLimitExceeded):
        return f"The save took longer than {saving.SAVE_TIME_LIMIT // 60} minutes and was stopped; try again."
    return f"The save failed unexpectedly ({type(exc).__name__}: {exc}); try again."


def _commit(image: Image) -> None:
    workspace = image.source_workspace
    if workspace is None:
        saving.fail(image.pk, "The workspace it was saved from was deleted before the save began.")
        return
    parent = image.parent
    labels = {
        "lattice.kind": image.kind,
        "lattice.title": image.title,
        "lattice.description": image.description,
        "lattice.parent": parent.reference if parent else "",
        "lattice.parent-title": parent.title if parent else "",
        "lattice.saved-by": image.owner.username,
        "lattice.saved-at": timezone.now().isoformat(timespec="seconds"),
    }
    engine = backend()
    _image_report(image, 10, "Listing what changed")
    changes = engine.diff(workspace.engine_id, image.source_container)
    _image_report(image, 30, "Pausing the container and saving it")
    saved = engine.commit(workspace.engine_id, image.source_container, image.reference, labels=labels)
    _image_report(image, 90, "Measuring the new image")
    parent_size = engine.image_size(parent.reference) if parent else 0
    if not Image.objects.filter(pk=image.pk, state=ImageState.SAVING).update(
        state=ImageState.READY,
        message="Ready",
        size=saved["size"],
        added_size=max(saved["size"] - parent_size, 0),
        built=timezone.now(),
        changes=saving.changes_record(changes),
    ):
        # Given up meanwhile (failed as stale): the row says failed, so no tag may stay behind.
        engine.remove_image(image.reference)
        return
    image.refresh_from_db()
    publish(image.owner_id, saving.image_event(image))


@shared_task(soft_time_limit=saving.SAVE_TIME_LIMIT, time_limit=saving.SAVE_TIME_LIMIT + 30)
def commit_container(image_id: int) -> None:
    """Commit a saved image's container; whatever goes wrong, the row ends failed, never "saving"."""
    image = (
        Image.objects.filter(pk=image_id, state=ImageState.SAVING)
        .select_related("parent", "owner", "source_workspace")
        .first()
    )
    if image is None:
        return
    try:
        _commit(image)
    except Exception as exc:
        logger.exception("Saving image %s failed", image_id)
        try:
            saving.fail(image_id, _save_failure(exc))
        except Exception:
            # The database itself is failing: the reconcile pass fails the row later.
            logger.exception("Could not mark image %s failed", image_id)


# --- classrooms -----------------------------------------------------------------


def _seat_event(seat: Seat) -> dict:
    return classrooms.seat_event(seat)


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
            files = backend().copy_data(
                sent.teacher.username, sent.files, seat.student.username, sent.classroom.folder
            )
        except EngineError as exc:
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
    spawn_workspace(ws.pk)
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
    """Copy each student's /data/<class>/ into the teacher's /data/collected/<class>/<student>/."""
    job = jobs.claim(job_id)
    if job is None:
        return
    classroom = Classroom.objects.get(pk=classroom_id)
    students = list(classroom.students.order_by("username"))
    report = {}
    for index, student in enumerate(students):
        jobs.report(job, int(100 * index / max(len(students), 1)), f"Collecting from {student.username}")
        target = f"collected/{classroom.folder}/{student.username}"
        try:
            files = backend().copy_data(student.username, classroom.folder, job.owner.username, target)
        except EngineError as exc:
            report[student.username] = {"ok": False, "detail": str(exc), "files": 0}
            continue
        mismatched = [f["path"] for f in files if f["source_sha256"] != f["sha256"]]
        report[student.username] = {
            "ok": not mismatched,
            "files": len(files),
            "detail": f"checksum mismatch: {', '.join(mismatched)}" if mismatched else "verified by sha256",
        }
    failed = [name for name, outcome in report.items() if not outcome["ok"]]
    message = f"Collected from {len(students) - len(failed)} of {len(students)} students" + (
        f"; not from {', '.join(failed)}." if failed else "."
    )
    jobs.finish(
        job, JobState.FAILED if failed and len(failed) == len(students) else JobState.DONE, message, report
    )


# --- admin catalog ----------------------------------------------------------------


class _LogStream:
    """Build log lines: to the admin's page at once, to the job row about once a second.

    Lines are numbered, so a page that starts following late fills the gap
    from the job row without showing a line twice.
    """

    MAX_LINES = 20_000  # kept on the row; the page still gets every line

    def __init__(self, job):
        self.job, self.lines, self.count, self.flushed = job, [], 0, time.monotonic()

    def __call__(self, line: str) -> None:
        n, self.count = self.count, self.count + 1
        if n < self.MAX_LINES:
            self.lines.append(line)
        elif n == self.MAX_LINES:
            self.lines.append(f"… only the first {self.MAX_LINES} lines of the log are kept.")
        publish(self.job.owner_id, {"type": "job-log", "id": self.job.pk, "n": n, "line": line})
        step = _BUILD_STEP.match(line.strip())
        if step:
            done, total = int(step.group(1)), max(int(step.group(2)), 1)
            jobs.report(self.job, 5 + 90 * (done - 1) // total, line.strip())
        if time.monotonic() - self.flushed > 1:
            self.flush()

    def flush(self) -> None:
        Job.objects.filter(pk=self.job.pk).update(log="\n".join(self.lines))
        self.flushed = time.monotonic()


_BUILD_STEP = re.compile(r"^Step (\d+)/(\d+) : ")


def _fail_job(job: Job, exc: BaseException, what: str, log: _LogStream | None = None) -> None:
    """The job ends failed with a message a person can read, and its log kept."""
    if isinstance(exc, EngineError | admin_catalog.CatalogError):
        message = str(exc)
    else:
        logger.error("%s job %s failed", what, job.pk, exc_info=exc)
        message = f"The {what} stopped unexpectedly ({type(exc).__name__}: {exc}); try again."
    try:
        if log is not None:
            log(f"✖ {message}")
            log.flush()
        jobs.settle(job, JobState.FAILED, message, {**job.result, "error": message})
    except Exception:
        # The database itself is failing: the reconcile pass fails the job later.
        logger.exception("could not mark %s job %s failed", what, job.pk)


@shared_task(
    soft_time_limit=admin_catalog.build_timeout() + 60, time_limit=admin_catalog.build_timeout() + 120
)
def build_image(job_id: int) -> None:
    """Build, then add the entry; whatever goes wrong, the job ends failed and the upload is removed."""
    job = jobs.claim(job_id)
    if job is None:
        jobs.discard_input(job_id)
        return
    log = _LogStream(job)
    try:
        jobs.report(job, 3, "Sending the build context")
        image = admin_catalog.build_entry(job, log)
        log.flush()
    except Exception as exc:
        _fail_job(job, exc, "build", log)
        return
    finally:
        jobs.discard_input(job_id)
    jobs.settle(
        job,
        JobState.DONE,
        f"Built {image.reference}; '{image.slug}' is in the catalog.",
        {**job.result, "image": image.pk, "slug": image.slug},
    )


@shared_task(soft_time_limit=admin_catalog.pull_timeout() + 60, time_limit=admin_catalog.pull_timeout() + 120)
def pull_image(job_id: int) -> None:
    """Pull from the registry, then add the entry; whatever goes wrong, the job ends failed."""
    job = jobs.claim(job_id)
    if job is None:
        return

    def progress(percent: int, status: str) -> None:
        jobs.report(job, percent, f"{status} ({percent}%)" if status else f"{percent}%")

    try:
        image = admin_catalog.pull_entry(job, progress)
    except Exception as exc:
        _fail_job(job, exc, "pull")
        return
    jobs.settle(
        job,
        JobState.DONE,
        f"Pulled {image.reference}; '{image.slug}' is in the catalog.",
        {**job.result, "image": image.pk, "slug": image.slug},
    )
