"""Workspace lifecycle: the whole state machine of a workspace.

What a user asks for (launch, start, stop, delete) is decided and claimed
here, and the engine work queued; the engine work itself (the start, the
stop, the removal, and their recovery after a worker died) is here too,
called by the tasks with an id. Every transition is a conditional update
(``filter(state=...).update(...)``) that must change exactly one row, so a
double click or two workers can never start or stop a workspace twice.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Callable, Iterable

from django.conf import settings
from django.db import transaction
from django.db.models import F, QuerySet

from .. import leases
from ..display import tokens as display_tokens
from ..engine.base import EngineError
from ..engine.errors import InvalidSpecError
from ..engine.specs import ContainerSpec, Limits, WorkspaceSpec
from ..lib import queue, refusals
from ..lib.engine_access import backend
from ..lib.events import class_group, publish, publish_group
from ..lib.redis import redis_client
from ..models import ACTIVE_STATES, Image, ImageKind, Seat, User, Workspace, WorkspaceState
from . import backups
from .catalog import launchable
from .failures import failure_message

logger = logging.getLogger(__name__)


class LaunchError(refusals.BadInput):
    """Bad input: the message says what to change (HTTP 400)."""


class NotAllowed(refusals.Forbidden):
    """The image exists but this user may not launch it (HTTP 403)."""


class NoSuchImage(refusals.Missing):
    """Another user's saved image: for this user it does not exist (HTTP 404)."""


class WrongState(refusals.Conflict):
    """The workspace is not in a state that allows this (HTTP 409)."""


class OverLimit(refusals.OverLimit):
    """The user runs as many workspaces as allowed (HTTP 429)."""


def start_deadline() -> float:
    """Seconds a workspace start may take before it counts as dead: the engine's start, plus room.

    The room covers what comes before the engine start (a seat's file copy,
    a restore from backup); work that may take longer renews what it holds.
    """
    return settings.LATTICE_SPAWN_TIMEOUT + 120


def _own_limit_message(running: int, limit: int) -> str:
    return f"You already run {running} workspace(s), the most allowed is {limit}. Stop one and try again."


def check_running_limit(user: User, message: Callable[[int, int], str] = _own_limit_message) -> None:
    """OverLimit when the user runs as many workspaces as allowed.

    Call inside a transaction: the user's row lock makes two launches at once
    count one by one. ``message(running, limit)`` words the refusal.
    """
    User.objects.select_for_update().filter(pk=user.pk).first()
    running = Workspace.objects.visible().filter(owner=user, state__in=ACTIVE_STATES).count()
    limit = settings.LATTICE_MAX_RUNNING_WORKSPACES
    if running >= limit:
        raise OverLimit(message(running, limit))


def pick_images(
    allowed_images: QuerySet[Image], display: str, apps: Iterable[str]
) -> tuple[Image, list[Image]]:
    """The display and app images named by slug, from those allowed; LaunchError otherwise."""
    if not isinstance(display, str) or not display:
        raise LaunchError("Choose a display image (field 'display').")
    apps = list(apps)
    if len(set(apps)) != len(apps):
        raise LaunchError("Each app can be chosen once.")
    allowed = {image.slug: image for image in allowed_images.filter(slug__in=[display, *apps])}
    unknown = [slug for slug in [display, *apps] if slug not in allowed]
    if unknown:
        _refuse_unknown(unknown)
    if allowed[display].kind != ImageKind.DISPLAY:
        raise LaunchError(f"'{display}' is an app image, not a display; choose a display image.")
    wrong = [slug for slug in apps if allowed[slug].kind != ImageKind.APP]
    if wrong:
        raise LaunchError(f"{', '.join(wrong)} is a display image; apps must be app images.")
    if allowed[display].kiosk and len(apps) != 1:
        raise LaunchError(
            f"'{display}' is a kiosk display: it shows exactly one app full screen. Choose one app."
        )
    chosen = [allowed[slug] for slug in apps]
    names = [container_name(image) for image in chosen]
    if "display" in names or len(set(names)) != len(names):
        raise LaunchError("Two of the chosen apps would share a container name; choose one of them.")
    return allowed[display], chosen


def _refuse_unknown(unknown: list[str]) -> None:
    """Why these slugs are not among the user's images; always raises."""
    # A catalog image someone may not use is "not allowed"; anything else that
    # is not theirs (another user's saved image) is simply unknown.
    forbidden = Image.objects.filter(owner=None, slug__in=unknown)
    disabled = list(forbidden.filter(enabled=False).values_list("slug", flat=True))
    if disabled:
        raise NotAllowed(
            f"{', '.join(disabled)} is disabled by an administrator: no new workspaces can use it."
        )
    not_allowed = list(forbidden.values_list("slug", flat=True))
    if not_allowed:
        raise NotAllowed(
            f"You may not launch {', '.join(not_allowed)}; ask your teacher or an administrator."
        )
    others = list(Image.objects.exclude(owner=None).filter(slug__in=unknown).values_list("slug", flat=True))
    if others:
        raise NoSuchImage(f"No image {', '.join(others)}.")
    raise LaunchError(f"Unknown image(s): {', '.join(unknown)}. Pick from GET /api/images/.")


def launch(user: User, display: str, apps: Iterable[str] = ()) -> Workspace:
    """Create a workspace and queue its spawn; the answer comes before any container."""
    display_image, app_images = pick_images(launchable(user), display, apps)
    with transaction.atomic():
        check_running_limit(user)
        workspace = create_workspace(user, display_image, app_images)
        queue.later("workspaces.tasks.workspace.spawn_workspace", workspace.pk)
    return workspace


def new_vnc_password() -> str:
    """A fresh VNC password: 8 characters, all that VNC's DES authentication reads."""
    return secrets.token_urlsafe(6)[:8]


def create_workspace(user: User, display: Image, apps: list[Image]) -> Workspace:
    """The row only (state pending); the caller decides how the spawn runs."""
    workspace = Workspace.objects.create(
        owner=user,
        display=display,
        vnc_password=new_vnc_password(),
        vnc_view_password=new_vnc_password(),
        message="Queued",
    )
    workspace.apps.set(apps)
    return workspace


def start(workspace: Workspace) -> None:
    disabled = [i.slug for i in [workspace.display, *workspace.apps.all()] if not i.enabled]
    if disabled:
        raise NotAllowed(
            f"{', '.join(disabled)} is disabled by an administrator: it cannot start again. "
            "Delete this workspace and launch another environment."
        )
    with transaction.atomic():
        check_running_limit(workspace.owner)
        claimed = (
            Workspace.objects.visible()
            .filter(pk=workspace.pk, state__in=[WorkspaceState.STOPPED, WorkspaceState.FAILED])
            .move(state=WorkspaceState.PENDING, progress=0, message="Queued", recoveries=0)
        )
        if claimed != 1:
            raise WrongState(
                f"The workspace is {_current_state(workspace)}; only a stopped or failed one can start."
            )
        queue.later("workspaces.tasks.workspace.spawn_workspace", workspace.pk)


# States a stop may leave from, and whether a task must then do the engine work.
# A start under way does it itself once the engine call returns (its task
# owns the engine for the workspace until then).
_STOPPABLE = {
    WorkspaceState.PENDING: True,
    WorkspaceState.STARTING: False,
    WorkspaceState.RUNNING: True,
    WorkspaceState.FAILED: True,  # some of its containers may still run
}


def _claim(workspace: Workspace, allowed: dict[str, bool], refusal: str, **fields) -> bool:
    """Move the workspace out of one of ``allowed``; returns whether a task must follow.

    The row is read and moved in one transaction with a row lock, so a
    worker's claim in between can never make a stop or delete answer 409.
    """
    with transaction.atomic():
        rows = Workspace.objects.filter(pk=workspace.pk, deleting=False)
        current = rows.select_for_update().values_list("state", flat=True).first()
        if current not in allowed or rows.filter(state=current).move(**fields) != 1:
            raise WrongState(refusal.format(state=current or "gone"))
    return allowed[current]


def stop(workspace: Workspace, reason: str = "") -> None:
    """Stop it; ``reason``, when given, is the message the user reads once it stopped."""
    needs_task = _claim(
        workspace,
        _STOPPABLE,
        "The workspace is {state}; there is nothing to stop.",
        state=WorkspaceState.STOPPING,
        message="Stopping",
    )
    display_tokens.revoke(redis_client(), workspace.pk)
    if needs_task:
        queue.later("workspaces.tasks.workspace.stop_workspace", workspace.pk, reason)


def delete(workspace: Workspace) -> None:
    """Remove containers and network; the user's data volume is never touched."""
    every_state = {state: state != WorkspaceState.STARTING for state in WorkspaceState.values}
    needs_task = _claim(
        workspace,
        every_state,
        "The workspace is already being deleted.",
        deleting=True,
        state=WorkspaceState.STOPPING,
        message="Deleting",
    )
    display_tokens.revoke(redis_client(), workspace.pk)
    if needs_task:
        queue.later("workspaces.tasks.workspace.remove_workspace", workspace.pk)


def _current_state(workspace: Workspace) -> str:
    return Workspace.objects.filter(pk=workspace.pk).values_list("state", flat=True).first() or "gone"


def container_name(image: Image) -> str:
    """The container's name in its workspace: the app's slug, or a saved image's name."""
    return re.sub(r"[^a-z0-9-]", "-", (image.name or image.slug).lower())[:63] or "app"


def containers_of(workspace: Workspace) -> dict[str, Image]:
    """Container name -> the image it runs: "display" and one per app."""
    return {"display": workspace.display, **{container_name(app): app for app in workspace.apps.all()}}


def _limits(image: Image) -> Limits:
    try:
        return Limits(mem_limit=image.mem_limit, cpus=image.cpus, pids_limit=image.pids_limit)
    except InvalidSpecError as exc:
        # An entry saved before limits were checked: say which, never run it unlimited.
        raise InvalidSpecError(f"{image.title}'s limits cannot be used: {exc}") from None


def _internet(workspace: Workspace, apps: list[Image]) -> bool:
    """Every app's image allows it, and no class the workspace was broadcast to is an exam."""
    if not all(app.internet for app in apps):
        return False
    return not Seat.objects.filter(workspace=workspace, broadcast__classroom__internet=False).exists()


def spec_for(workspace: Workspace) -> WorkspaceSpec:
    display = workspace.display
    apps = list(workspace.apps.all())
    return WorkspaceSpec(
        workspace_id=workspace.engine_id,
        owner=workspace.owner.username,
        owner_id=workspace.owner_id,
        display=ContainerSpec(
            name="display", image=display.reference, role="display", limits=_limits(display)
        ),
        apps=tuple(
            ContainerSpec(name=container_name(app), image=app.reference, role="app", limits=_limits(app))
            for app in apps
        ),
        vnc_password=workspace.vnc_password,
        vnc_view_password=workspace.vnc_view_password,
        kiosk=display.kiosk,
        internet=_internet(workspace, apps),
    )


def issue_display_token(
    workspace: Workspace, mode: str, scopes: tuple[str, ...] = (), *, user: User | None = None
) -> tuple[str, str]:
    """A single-use token for the display proxy, and the VNC password for that mode.

    ``scopes`` name what else the token is for (a demo, a teacher's control),
    so that ending that also ends the connection. ``user`` is who asks (the
    owner when not given): their requests are rate-limited and the proxy
    counts their open connections.
    """
    user_id = user.pk if user is not None else workspace.owner_id
    client = redis_client()
    limit = settings.LATTICE_DISPLAY_TOKENS_PER_MINUTE
    if display_tokens.count_token_request(client, user_id) > limit:
        raise OverLimit(
            f"You asked to open a screen more than {limit} times in a minute; wait a minute and try again."
        )
    current = (
        Workspace.objects.filter(pk=workspace.pk, deleting=False).values("state", "engine_state").first()
    )
    state = current["state"] if current else "gone"
    if state != WorkspaceState.RUNNING:
        raise WrongState(f"The workspace is {state}; its display opens once it is running.")
    endpoint = current["engine_state"].get("endpoint") or {}
    if not endpoint.get("path"):
        raise WrongState("The workspace has no display yet; try again in a moment.")
    if not endpoint.get("container_id") or not endpoint.get("server_pid"):
        # Started before displays were known by their VNC server's identity, or
        # the student's own server held the socket: the proxy would refuse it.
        raise WrongState(
            "This workspace's display cannot be checked (an older Lattice started it, or something "
            "else holds its socket): stop the workspace and start it again."
        )
    grant = display_tokens.Grant(
        workspace=workspace.pk,
        socket=endpoint["path"],
        mode=mode,
        scopes=scopes,
        user=user_id,
        # The proxy connects only when the display container's own VNC server answers.
        container_id=endpoint["container_id"],
        server_pid=endpoint["server_pid"],
    )
    token = display_tokens.issue(client, grant, settings.LATTICE_DISPLAY_TOKEN_TTL)
    # A stop that came between the read above and the issue revoked every
    # token but this one: look again, so none outlives the stop.
    if _current_state(workspace) != WorkspaceState.RUNNING:
        display_tokens.revoke(client, workspace.pk)
        raise WrongState("The workspace is stopping; its display is closed.")
    # View mode holds twice: the proxy drops a view connection's input, and
    # the view password makes the VNC server ignore it too.
    password = workspace.vnc_password if mode == "control" else workspace.vnc_view_password
    return token, password


# --- the engine half: the start, the stop, the removal, and their recovery ------------------
# The tasks (workspaces/tasks/lifecycle.py) call these with an id; what a
# user asks for is above. Together they are the workspace's whole state
# machine, every transition a conditional update.

SPAWN = "workspaces.tasks.workspace.spawn_workspace"
STOP = "workspaces.tasks.workspace.stop_workspace"
REMOVE = "workspaces.tasks.workspace.remove_workspace"


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


def report(ws: Workspace, progress: int, message: str) -> None:
    """Progress of the work under way; dropped once a stop or delete took the workspace over."""
    if Workspace.objects.filter(pk=ws.pk, state=ws.state, deleting=False).move(
        progress=progress, message=message
    ):
        ws.progress, ws.message = progress, message
        _announce(ws)


def settle(ws: Workspace, expected: str, state: str, message: str, **fields) -> bool:
    """Conditional move; False when someone (a stop, a delete, a run that took the start up
    again: recoveries is the claim's generation) changed the row meanwhile."""
    changed = Workspace.objects.filter(
        pk=ws.pk, state=expected, deleting=False, recoveries=ws.recoveries
    ).move(state=state, message=message, **fields)
    if changed == 1:
        ws.refresh_from_db()
        _announce(ws)
    return changed == 1


def engine_containers(engine_id: str) -> list[dict]:
    try:
        return [{"name": c.name, "image": c.image, "state": c.state} for c in backend().containers(engine_id)]
    except EngineError:
        return []  # the engine is what failed; the message says so


def start_now(workspace_id: int, still_working: Callable[[], None] | None = None) -> None:
    """Start a workspace's containers (the task spawn_workspace, and a seat's start, inline).
    While it runs, this call alone drives the engine for the workspace: a stop or delete that arrives meanwhile only marks
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
        report(ws, 1, "Starting again (the worker had stopped)")
    # Held while the start runs, whatever a stop or delete did to the row
    # meanwhile (this task carries those out once the engine call returns),
    # and only while no other run took the start up.
    held = Workspace.objects.filter(pk=workspace_id, recoveries=ws.recoveries)
    with leases.Renewing(held.move, f"workspace {workspace_id}", at_most=start_deadline()):
        _spawn(ws, still_working)


def _spawn(ws: Workspace, still_working: Callable[[], None] | None) -> None:
    workspace_id = ws.pk

    def progress(percent: int, message: str) -> None:
        report(ws, percent, message)
        if still_working is not None:
            still_working()

    try:
        spec = spec_for(ws)
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
        engine_state = {"containers": engine_containers(ws.engine_id)}
        if not settle(ws, WorkspaceState.STARTING, WorkspaceState.FAILED, message, engine_state=engine_state):
            _carry_out_interruption(workspace_id)
        return
    # start() returned, so every container of the spec runs: no need to ask the engine.
    engine_state = {
        "endpoint": endpoint.as_dict(),
        "containers": [{"name": c.name, "image": c.image, "state": "running"} for c in spec.containers],
    }
    if not settle(
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
        remove_now(workspace_id)
    elif ws.state == WorkspaceState.STOPPING:
        stop_now(workspace_id)


def stop_now(workspace_id: int, reason: str = "") -> None:
    """Stop the containers; ``reason`` (why the portal stopped it) stays as the message."""
    ws = Workspace.objects.filter(pk=workspace_id, state=WorkspaceState.STOPPING, deleting=False).first()
    if ws is None:
        return
    report(ws, 50, "Stopping containers")
    try:
        with leases.Renewing(_holding(workspace_id), f"workspace {workspace_id}"):
            backend().stop(ws.engine_id)
    except Exception as exc:
        # Left failed, not stopping: the user may stop it again, and the
        # reconcile looks at it with the engine's own eyes.
        engine_state = {"containers": engine_containers(ws.engine_id)}
        message = "Could not stop: " + failure_message(exc, "Stopping the workspace")
        settle(ws, WorkspaceState.STOPPING, WorkspaceState.FAILED, message[:300], engine_state=engine_state)
        return
    engine_state = {"containers": engine_containers(ws.engine_id)}
    if settle(
        ws,
        WorkspaceState.STOPPING,
        WorkspaceState.STOPPED,
        reason or "Stopped",
        progress=0,
        engine_state=engine_state,
    ):
        # Stopped, the files are still: the moment for a consistent backup.
        queue.now("workspaces.tasks.backup.back_up", ws.owner_id, "stopped")


def remove_now(workspace_id: int) -> None:
    """Remove a workspace marked for deletion: its containers and network (never the data volume)."""
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


def lapsed(states: list[str], deleting: bool = False) -> QuerySet[Workspace]:
    """Rows in a passing state whose lease lapsed: the task (or the message) on them is gone."""
    return Workspace.objects.filter(leases.lapsed(), state__in=states, deleting=deleting)


def recover_lapsed() -> int:
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
        WorkspaceState.PENDING: ({}, SPAWN),
        WorkspaceState.STARTING: (
            {
                "state": WorkspaceState.PENDING,
                "message": "Starting again (the worker had stopped)",
                "recoveries": F("recoveries") + 1,
            },
            SPAWN,
        ),
        WorkspaceState.STOPPING: ({"recoveries": F("recoveries") + 1}, STOP),
    }
    recovered = 0
    for ws in lapsed(list(again)):
        if ws.state != WorkspaceState.PENDING and ws.recoveries >= leases.max_recoveries():
            _give_up(ws)
            recovered += 1
            continue
        fields, task = again[ws.state]
        same = Workspace.objects.filter(
            pk=ws.pk, state=ws.state, deleting=False, leased_until=ws.leased_until, recoveries=ws.recoveries
        )
        if same.move(**fields):
            queue.now(task, ws.pk)
            recovered += 1
    for ws in lapsed(WorkspaceState.values, deleting=True):
        if Workspace.objects.filter(pk=ws.pk, deleting=True, leased_until=ws.leased_until).move():
            queue.now(REMOVE, ws.pk)
            recovered += 1
    return recovered


def _give_up(ws: Workspace) -> None:
    """A start or stop interrupted too often: failed, with the reason; what runs of it is stopped."""
    doing = "start" if ws.state == WorkspaceState.STARTING else "stop"
    message = (
        f"The {doing} was interrupted {ws.recoveries + 1} times (its worker stopped each time); "
        f"{doing} it again, or ask an administrator to look at the worker's log."
    )
    if settle(ws, ws.state, WorkspaceState.FAILED, message[:300]):
        _stop_leftovers(ws)
        ws.engine_state = {"containers": engine_containers(ws.engine_id)}
        Workspace.objects.filter(pk=ws.pk).update(engine_state=ws.engine_state)
