"""Workspace lifecycle: decide, claim the transition, queue the engine work.

Every transition is a conditional update (``filter(state=...).update(...)``)
that must change exactly one row, so a double click or two workers can never
start or stop a workspace twice. The engine work itself runs in tasks.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterable

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet

from ..display import tokens as display_tokens
from ..engine.errors import InvalidSpecError
from ..engine.specs import ContainerSpec, Limits, WorkspaceSpec
from ..lib import queue, refusals
from ..lib.redis import redis_client
from ..models import ACTIVE_STATES, Image, ImageKind, Seat, User, Workspace, WorkspaceState
from .catalog import launchable


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
