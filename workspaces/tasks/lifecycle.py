"""Starting, stopping and removing workspaces, and keeping the database and the engine together."""

from __future__ import annotations

import logging
from collections.abc import Callable

from celery import shared_task
from django.conf import settings
from django.db.models import F, QuerySet

from .. import leases
from ..engine.base import EngineError
from ..lib.engine_access import backend
from ..lib.events import class_group, publish, publish_group
from ..models import (
    Seat,
    Workspace,
    WorkspaceState,
)
from ..services import backups, lifecycle, teaching, thumbnails
from .backups import back_up
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
    """Conditional move; False when someone (a stop, a delete, a run that took the start up
    again: recoveries is the claim's generation) changed the row meanwhile."""
    changed = Workspace.objects.filter(
        pk=ws.pk, state=expected, deleting=False, recoveries=ws.recoveries
    ).move(state=state, message=message, **fields)
    if changed == 1:
        ws.refresh_from_db()
        _announce(ws)
    return changed == 1


def _containers(engine_id: str) -> list[dict]:
    try:
        return [{"name": c.name, "image": c.image, "state": c.state} for c in backend().containers(engine_id)]
    except EngineError:
        return []  # the engine is what failed; the message says so


@shared_task(name="workspaces.tasks.workspace.spawn_workspace")
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
        return  # stopped, deleted, running already, or another worker is on it
    ws = Workspace.objects.select_related("owner", "display").get(pk=workspace_id)
    _announce(ws)
    if ws.recoveries:
        # Its last run's worker died: this one goes on from what the engine
        # has (start() makes only what is missing).
        _report(ws, 1, "Starting again (the worker had stopped)")
    # Held while the start runs, whatever a stop or delete did to the row
    # meanwhile (this task carries those out once the engine call returns),
    # and only while no other run took the start up.
    held = Workspace.objects.filter(pk=workspace_id, recoveries=ws.recoveries)
    with leases.Renewing(held.move, f"workspace {workspace_id}", at_most=lifecycle.start_deadline()):
        _spawn(ws, still_working)


def _spawn(ws: Workspace, still_working: Callable[[], None] | None) -> None:
    workspace_id = ws.pk

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
        if ws.recoveries:
            _stop_leftovers(ws)
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


def _stop_leftovers(ws: Workspace) -> None:
    """A start taken up again failed: what the dead run began must not keep running half-made.

    (A first start removes what it made itself when it fails; this run did
    not make what the dead one made.)
    """
    try:
        backend().stop(ws.engine_id)
    except EngineError as exc:
        logger.warning("workspace %s: could not stop what the interrupted start began: %s", ws.pk, exc)


def _carry_out_interruption(workspace_id: int) -> None:
    """A stop or delete arrived during the start: do it now that the start is over."""
    ws = Workspace.objects.filter(pk=workspace_id).first()
    if ws is None:
        return
    if ws.deleting:
        remove_workspace(workspace_id)
    elif ws.state == WorkspaceState.STOPPING:
        stop_workspace(workspace_id)


@shared_task(name="workspaces.tasks.workspace.stop_workspace")
def stop_workspace(workspace_id: int, reason: str = "") -> None:
    """Stop the containers; ``reason`` (why the portal stopped it) stays as the message."""
    ws = Workspace.objects.filter(pk=workspace_id, state=WorkspaceState.STOPPING, deleting=False).first()
    if ws is None:
        return
    _report(ws, 50, "Stopping containers")
    try:
        with leases.Renewing(_holding(workspace_id), f"workspace {workspace_id}"):
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


@shared_task(name="workspaces.tasks.workspace.remove_workspace")
def remove_workspace(workspace_id: int) -> None:
    ws = Workspace.objects.filter(pk=workspace_id, deleting=True).first()
    if ws is None:
        return
    try:
        with leases.Renewing(_holding(workspace_id), f"workspace {workspace_id}"):
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


def _holding(workspace_id: int) -> Callable[[], int]:
    """What renews a workspace's lease: any move of its row does."""
    return Workspace.objects.filter(pk=workspace_id).move


def _lapsed(states: list[str], deleting: bool = False) -> QuerySet[Workspace]:
    """Rows in a passing state whose lease lapsed: the task (or the message) on them is gone."""
    return Workspace.objects.filter(leases.lapsed(), state__in=states, deleting=deleting)


@shared_task(name="workspaces.tasks.workspace.capture_thumbnail")
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


@shared_task(name="workspaces.tasks.workspace.expire_control")
def expire_control() -> int:
    """End teachers' control of screens whose viewer page went away without a word."""
    return teaching.expire_control_sessions()


def recover_workspaces() -> int:
    """Take up every start, stop and delete whose worker died (its lease lapsed); how many.

    Each is renewed (or handed back) by a conditional update on the lease it
    had, so two passes at once send it once. A pending workspace's message
    was lost: sent again. A start goes back to pending with one more recovery
    counted, and the next spawn_workspace claims it and goes on from what
    the engine has; after LATTICE_MAX_RECOVERIES it fails with the reason.
    Stops and deletes are sent again (both may run twice); a stop
    interrupted too often fails, saying so.
    """
    again = {
        WorkspaceState.PENDING: ({}, spawn_workspace),
        WorkspaceState.STARTING: (
            {
                "state": WorkspaceState.PENDING,
                "message": "Starting again (the worker had stopped)",
                "recoveries": F("recoveries") + 1,
            },
            spawn_workspace,
        ),
        WorkspaceState.STOPPING: ({"recoveries": F("recoveries") + 1}, stop_workspace),
    }
    recovered = 0
    for ws in _lapsed(list(again)):
        if ws.state != WorkspaceState.PENDING and ws.recoveries >= leases.max_recoveries():
            _give_up(ws)
            recovered += 1
            continue
        fields, task = again[ws.state]
        same = Workspace.objects.filter(
            pk=ws.pk, state=ws.state, deleting=False, leased_until=ws.leased_until, recoveries=ws.recoveries
        )
        if same.move(**fields):
            task.delay(ws.pk)
            recovered += 1
    for ws in _lapsed(WorkspaceState.values, deleting=True):
        if Workspace.objects.filter(pk=ws.pk, deleting=True, leased_until=ws.leased_until).move():
            remove_workspace.delay(ws.pk)
            recovered += 1
    return recovered


def _give_up(ws: Workspace) -> None:
    """A start or stop interrupted too often: failed, with the reason; what runs of it is stopped."""
    doing = "start" if ws.state == WorkspaceState.STARTING else "stop"
    message = (
        f"The {doing} was interrupted {ws.recoveries + 1} times (its worker stopped each time); "
        f"{doing} it again, or ask an administrator to look at the worker's log."
    )
    if _settle(ws, ws.state, WorkspaceState.FAILED, message[:300]):
        _stop_leftovers(ws)
        ws.engine_state = {"containers": _containers(ws.engine_id)}
        Workspace.objects.filter(pk=ws.pk).update(engine_state=ws.engine_state)
