"""Starting, stopping and removing workspaces, and keeping the database and the engine together."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from .. import (
    backups,
    classrooms,
    display_tokens,
    jobs,
    lifecycle,
    saving,
    teaching,
    thumbnails,
)
from ..engine.base import EngineError
from ..engine_access import backend
from ..events import class_group, publish, publish_group
from ..models import (
    Seat,
    Workspace,
    WorkspaceState,
)
from .backup import back_up
from .common import failure_message

logger = logging.getLogger(__name__)


def _workspace_event(ws: Workspace) -> dict:
    return {
        "type": "workspace",
        "id": ws.pk,
        "state": ws.state,
        "progress": ws.progress,
        "message": ws.message,
        "containers": ws.engine_state.get("containers", []),
    }


def _find_class(ws: Workspace) -> int:
    """The class whose broadcast started the workspace (0 for none), looked up once per object.

    A delete must look before the row goes: the seat's link to it goes with it.
    """
    if getattr(ws, "_classroom_id", None) is None:
        seat = (
            Seat.objects.filter(workspace=ws).values("broadcast__classroom_id", "student__username").first()
        )
        ws._classroom_id = seat["broadcast__classroom_id"] if seat else 0
        ws._student = seat["student__username"] if seat else ""
    return ws._classroom_id


def _announce(ws: Workspace, event: dict | None = None) -> None:
    """To the owner, and to the teachers of a class whose broadcast started it."""
    event = event or _workspace_event(ws)
    publish(ws.owner_id, event)
    classroom_id = _find_class(ws)
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


@shared_task
def spawn_workspace(workspace_id: int, still_working: Callable[[], None] | None = None) -> None:
    """Start a workspace's containers. While it runs, this task alone drives the
    engine for the workspace: a stop or delete that arrives meanwhile only marks
    the row, and is carried out here once the engine call returns.

    Each progress report stamps the row (so reconcile sees the start alive)
    and calls ``still_working``, with which a caller renews what it holds
    for the start (a seat's start slot).
    """
    claimed = Workspace.objects.filter(pk=workspace_id, state=WorkspaceState.PENDING, deleting=False).move(
        state=WorkspaceState.STARTING, progress=1, message="Starting"
    )
    if claimed != 1:
        return  # stopped, deleted or already claimed by another worker
    ws = Workspace.objects.select_related("owner", "display").get(pk=workspace_id)
    _announce(ws)

    def progress(percent: int, message: str) -> None:
        _report(ws, percent, message)
        if still_working is not None:
            still_working()

    try:
        spec = lifecycle.spec_for(ws)
        # On an engine without the owner's files (a new host), their newest backup comes first.
        backups.restore_if_missing(ws.owner, progress=progress)
        endpoint = backend().start(spec, progress=progress, timeout=settings.LATTICE_SPAWN_TIMEOUT)
    except Exception as exc:
        # Whatever broke, the workspace must not stay "starting": the user
        # reads why, and may start it again.
        message = failure_message(exc, "Starting the workspace")
        logger.warning("workspace %s failed to start: %s", workspace_id, message)
        engine_state = {"containers": _containers(ws.engine_id)}
        if not _settle(
            ws, WorkspaceState.STARTING, WorkspaceState.FAILED, message, engine_state=engine_state
        ):
            _carry_out_interruption(workspace_id)
        return
    # start() returned, so every container of the spec runs: no need to ask the engine.
    engine_state = {
        "endpoint": endpoint.as_dict(),
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
def stop_workspace(workspace_id: int, reason: str = "") -> None:
    """Stop the containers; ``reason`` (why the portal stopped it) stays as the message."""
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
        message = "Could not stop: " + failure_message(exc, "Stopping the workspace")
        _settle(ws, WorkspaceState.STOPPING, WorkspaceState.FAILED, message[:300], engine_state=engine_state)
        return
    engine_state = {"containers": _containers(ws.engine_id)}
    if _settle(
        ws,
        WorkspaceState.STOPPING,
        WorkspaceState.STOPPED,
        reason or "Stopped",
        progress=0,
        engine_state=engine_state,
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
        message = "Could not delete yet: " + failure_message(exc, "Deleting the workspace")
        Workspace.objects.filter(pk=workspace_id).move(message=message[:300])
        _announce(ws, {**_workspace_event(ws), "message": message})
        return
    _find_class(ws)  # while the seat still links to the row
    Workspace.objects.filter(pk=workspace_id).delete()
    _announce(
        ws,
        {"type": "workspace", "id": workspace_id, "state": "deleted", "progress": 100, "message": "Deleted"},
    )


def _stuck(states: list[str], deleting: bool = False) -> QuerySet[Workspace]:
    """Rows in a passing state for longer than any start could take: their task is gone."""
    limit = timezone.now() - timedelta(seconds=lifecycle.start_deadline())
    return Workspace.objects.filter(state__in=states, deleting=deleting, updated__lt=limit)


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


def _check_egress() -> int:
    """1 when the apps' egress rules had gone (a firewall reload, a hand edit) and were put back.

    A start checks them, but they can go while apps run; reconcile looks
    again each pass (one `iptables -S` when nothing changed), only while
    some running workspace has apps. -1 when they could not be put back.
    """
    if not Workspace.objects.filter(state=WorkspaceState.RUNNING, apps__isnull=False).exists():
        return 0
    try:
        restored = backend().ensure_egress()
    except EngineError as exc:
        logger.error("reconcile: running apps are without their egress rules: %s", exc)
        return -1
    if restored:
        logger.warning("reconcile: the apps' egress rules had gone; put back")
    return int(restored)


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
    fixed["egress"] = _check_egress()
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
