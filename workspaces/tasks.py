"""Celery tasks: thin, idempotent, reload by id, publish progress."""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor

from celery import shared_task
from django.conf import settings
from django.db import connections
from django.db.models import F
from django.utils import timezone

from . import admin_catalog, display_tokens, jobs, lifecycle, saving, services_health
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
    ws.progress, ws.message = progress, message
    Workspace.objects.filter(pk=ws.pk).update(progress=progress, message=message)
    _announce(ws)


def _settle(ws: Workspace, expected: str, state: str, message: str, **fields) -> bool:
    """Conditional move; False when someone (a stop, a delete) changed the state meanwhile."""
    changed = Workspace.objects.filter(pk=ws.pk, state=expected, deleting=False).update(
        state=state, message=message, **fields
    )
    if changed == 1:
        ws.refresh_from_db()
        _announce(ws)
    return changed == 1


def _containers(engine_id: str) -> list[dict]:
    return [{"name": c.name, "image": c.image, "state": c.state} for c in backend().containers(engine_id)]


@shared_task
def spawn_workspace(workspace_id: int) -> None:
    """Start a workspace's containers. While it runs, this task alone drives the
    engine for the workspace: a stop or delete that arrives meanwhile only marks
    the row, and is carried out here once the engine call returns."""
    claimed = Workspace.objects.filter(pk=workspace_id, state=WorkspaceState.PENDING, deleting=False).update(
        state=WorkspaceState.STARTING, progress=1, message="Starting"
    )
    if claimed != 1:
        return  # stopped, deleted or already claimed by another worker
    ws = Workspace.objects.select_related("owner", "display").get(pk=workspace_id)
    _announce(ws)
    spec = lifecycle.spec_for(ws)
    try:
        endpoint = backend().start(
            spec,
            progress=lambda p, m: _report(ws, p, m),
            timeout=settings.LATTICE_SPAWN_TIMEOUT,
        )
    except EngineError as exc:
        logger.warning("workspace %s failed to start: %s", workspace_id, exc)
        engine_state = {"containers": _containers(ws.engine_id)}
        if not _settle(
            ws, WorkspaceState.STARTING, WorkspaceState.FAILED, str(exc), engine_state=engine_state
        ):
            _carry_out_interruption(workspace_id)
        return
    # start() returned, so every container of the spec runs: no need to ask the engine.
    engine_state = {
        "endpoint": {"host": endpoint.host, "port": endpoint.port},
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
    backend().stop(ws.engine_id)
    engine_state = {"containers": _containers(ws.engine_id)}
    _settle(
        ws, WorkspaceState.STOPPING, WorkspaceState.STOPPED, "Stopped", progress=0, engine_state=engine_state
    )


@shared_task
def remove_workspace(workspace_id: int) -> None:
    ws = Workspace.objects.filter(pk=workspace_id, deleting=True).first()
    if ws is None:
        return
    backend().remove(ws.engine_id)  # never the data volume
    Workspace.objects.filter(pk=workspace_id).delete()
    publish(
        ws.owner_id,
        {"type": "workspace", "id": workspace_id, "state": "deleted", "progress": 100, "message": "Deleted"},
    )


@shared_task
def reconcile() -> dict:
    """Bring the database and the engine's labels together.

    Running rows whose containers died become failed; workspaces the engine has
    but the database does not (a crash between the two) are removed.
    """
    stale_saves = saving.fail_stale_saves(saving.STALE_SAVE_SECONDS)  # before the engine: it may be down
    engine = backend().list_workspaces()
    fixed = {"failed": 0, "orphans": 0, "stale_saves": stale_saves}
    for ws in Workspace.objects.filter(state=WorkspaceState.RUNNING, deleting=False):
        if engine.get(ws.engine_id) != "running" and Workspace.objects.filter(
            pk=ws.pk, state=WorkspaceState.RUNNING
        ).update(state=WorkspaceState.FAILED, message="The workspace's containers stopped unexpectedly."):
            display_tokens.revoke(lifecycle.redis_client(), ws.pk)
            fixed["failed"] += 1
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
    ws = seat.workspace
    return {
        "type": "seat",
        "broadcast": seat.broadcast_id,
        "student": seat.student.username,
        "state": seat.state,
        "message": seat.message,
        "workspace": seat.workspace_id,
        "progress": ws.progress if ws else 0,
        "files": seat.files,
    }


def _seat_update(seat: Seat, **fields) -> None:
    for name, value in fields.items():
        setattr(seat, name, value)
    Seat.objects.filter(pk=seat.pk).update(**fields)
    publish_group(class_group(seat.broadcast.classroom_id), _seat_event(seat))


@shared_task
def run_broadcast(broadcast_id: int) -> None:
    """Start every queued seat, at most LATTICE_BROADCAST_CONCURRENCY at a time.

    Bounded here rather than by the number of Celery workers: a class of 30
    must not become 30 simultaneous container starts on a 2-core machine.
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
        Seat.objects.filter(pk=seat_id).update(state=SeatState.FAILED, message=f"Could not start: {exc}")
        return exc
    finally:
        connections.close_all()  # this thread's own database connection
    return None


@shared_task
def start_seat(seat_id: int) -> None:
    """One student's part: their workspace started, the starter files copied in."""
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
    sent = seat.broadcast
    if sent.files:
        # Before the start, so the files are there when the student's apps open.
        _seat_update(seat, message="Copying the starter files")
        try:
            files = backend().copy_data(
                sent.teacher.username, sent.files, seat.student.username, sent.classroom.folder
            )
        except EngineError as exc:
            _seat_update(seat, state=SeatState.FAILED, message=str(exc))
            return
        statuses = [f["status"] for f in files]
        seat.files = {status: statuses.count(status) for status in ("copied", "beside", "same")}
    ws = lifecycle.create_workspace(seat.student, sent.display, list(sent.apps.all()))
    _seat_update(seat, workspace=ws, files=seat.files, message="Starting the workspace")
    spawn_workspace(ws.pk)
    ws.refresh_from_db()
    if ws.state != WorkspaceState.RUNNING:
        _seat_update(seat, state=SeatState.FAILED, message=ws.message or "The workspace did not start.")
        return
    _seat_update(seat, state=SeatState.RUNNING, message="Running")
    publish(
        seat.student_id,
        {
            "type": "notice",
            "message": f"{sent.teacher.username} started {sent.display.title} for {sent.classroom.name}.",
            "open": f"/workspaces/{ws.pk}/",
            "workspace": ws.pk,
        },
    )


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
    """Build log lines: to the admin's page at once, to the job row in batches."""

    def __init__(self, job):
        self.job, self.lines, self.flushed = job, [], time.monotonic()

    def __call__(self, line: str) -> None:
        self.lines.append(line)
        publish(self.job.owner_id, {"type": "job-log", "id": self.job.pk, "line": line})
        if line.startswith("Step "):
            jobs.report(self.job, min(95, self.job.progress + 5), line[:300])
        if time.monotonic() - self.flushed > 1:
            self.flush()

    def flush(self) -> None:
        Job.objects.filter(pk=self.job.pk).update(log="\n".join(self.lines))
        self.flushed = time.monotonic()


@shared_task
def build_image(job_id: int) -> None:
    from pathlib import Path

    from .engine.docker_catalog import context_from_folder

    job = jobs.claim(job_id)
    if job is None:
        return
    fields, folder = job.result["fields"], job.result.get("folder")
    reference = f"lattice/{fields['slug']}:latest"
    log = _LogStream(job)
    try:
        if folder:
            context = context_from_folder(admin_catalog.IMAGES_DIR / folder)
            origin = f"built from images/{folder}"
        else:
            path = Path(job.result["context"])
            context = path.read_bytes()
            path.unlink(missing_ok=True)
            origin = f"built from the upload {job.result.get('upload', '')}"
        jobs.report(job, 5, "Sending the build context")
        built = backend().build(context, reference, log, buildargs={"BASE": "lattice/base:latest"})
        image = admin_catalog._entry(reference, built["labels"], fields, origin)
        Image.objects.filter(pk=image.pk).update(size=built["size"])
    except (EngineError, admin_catalog.CatalogError) as exc:
        log.flush()
        jobs.finish(job, JobState.FAILED, str(exc), {"fields": fields})
        return
    log.flush()
    jobs.finish(
        job,
        JobState.DONE,
        f"Built {reference}; '{image.slug}' is in the catalog.",
        {"fields": fields, "image": image.pk, "slug": image.slug},
    )


@shared_task
def pull_image(job_id: int, reference: str, fields: dict) -> None:
    job = jobs.claim(job_id)
    if job is None:
        return
    try:
        pulled = backend().pull(reference, lambda p, m: jobs.report(job, p, f"{m} ({p}%)" if m else f"{p}%"))
        full = reference if ":" in reference.rsplit("/", 1)[-1] else f"{reference}:latest"
        image = admin_catalog._entry(full, pulled["labels"], fields, f"pulled from {reference}")
        Image.objects.filter(pk=image.pk).update(size=pulled["size"])
    except (EngineError, admin_catalog.CatalogError) as exc:
        jobs.finish(job, JobState.FAILED, str(exc))
        return
    jobs.finish(
        job,
        JobState.DONE,
        f"Pulled {reference}; '{image.slug}' is in the catalog.",
        {"image": image.pk, "slug": image.slug},
    )
