"""Workspace lifecycle: decide, claim the transition, queue the engine work.

Every transition is a conditional update (``filter(state=...).update(...)``)
that must change exactly one row, so a double click or two workers can never
start or stop a workspace twice. The engine work itself runs in tasks.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable

import redis
from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet

from . import display_tokens
from .catalog import launchable
from .engine.specs import ContainerSpec, Limits, WorkspaceSpec
from .models import ACTIVE_STATES, Image, ImageKind, User, Workspace, WorkspaceState


class LaunchError(ValueError):
    """Bad input: the message says what to change (HTTP 400)."""


class NotAllowed(Exception):
    """The image exists but this user may not launch it (HTTP 403)."""


class WrongState(Exception):
    """The workspace is not in a state that allows this (HTTP 409)."""


class OverLimit(Exception):
    """The user runs as many workspaces as allowed (HTTP 429)."""


def redis_client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL)


def _check_running_limit(user: User) -> None:
    running = Workspace.objects.visible().filter(owner=user, state__in=ACTIVE_STATES).count()
    limit = settings.LATTICE_MAX_RUNNING_WORKSPACES
    if running >= limit:
        raise OverLimit(
            f"You already run {running} workspace(s), the most allowed is {limit}. Stop one and try again."
        )


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
    # A catalog image someone may not use is "not allowed"; anything else that
    # is not theirs (another user's saved image) is simply unknown.
    forbidden = Image.objects.filter(owner=None, slug__in=unknown)
    if forbidden.filter(enabled=False).exists():
        raise NotAllowed(
            f"{', '.join(forbidden.filter(enabled=False).values_list('slug', flat=True))} is "
            "disabled by an administrator: no new workspaces can use it."
        )
    if forbidden.exists():
        raise NotAllowed(
            f"You may not launch {', '.join(forbidden.values_list('slug', flat=True))}; "
            "ask your teacher or an administrator."
        )
    if unknown:
        raise LaunchError(f"Unknown image(s): {', '.join(unknown)}. Pick from GET /api/images/.")
    if allowed[display].kind != ImageKind.DISPLAY:
        raise LaunchError(f"'{display}' is an app image, not a display; choose a display image.")
    wrong = [slug for slug in apps if allowed[slug].kind != ImageKind.APP]
    if wrong:
        raise LaunchError(f"{', '.join(wrong)} is a display image; apps must be app images.")
    chosen = [allowed[slug] for slug in apps]
    names = [container_name(image) for image in chosen]
    if "display" in names or len(set(names)) != len(names):
        raise LaunchError("Two of the chosen apps would share a container name; choose one of them.")
    return allowed[display], chosen


def launch(user: User, display: str, apps: Iterable[str] = ()) -> Workspace:
    """Create a workspace and queue its spawn; the answer comes before any container."""
    from .tasks import spawn_workspace

    display_image, app_images = pick_images(launchable(user), display, apps)
    with transaction.atomic():
        _check_running_limit(user)
        workspace = create_workspace(user, display_image, app_images)
        transaction.on_commit(lambda: spawn_workspace.delay(workspace.pk))
    return workspace


def create_workspace(user: User, display: Image, apps: list[Image]) -> Workspace:
    """The row only (state pending); the caller decides how the spawn runs."""
    workspace = Workspace.objects.create(
        owner=user,
        display=display,
        vnc_password=secrets.token_urlsafe(6)[:8],
        vnc_view_password=secrets.token_urlsafe(6)[:8],
        message="Queued",
    )
    workspace.apps.set(apps)
    return workspace


def start(workspace: Workspace) -> None:
    from .tasks import spawn_workspace

    with transaction.atomic():
        _check_running_limit(workspace.owner)
        claimed = (
            Workspace.objects.visible()
            .filter(pk=workspace.pk, state__in=[WorkspaceState.STOPPED, WorkspaceState.FAILED])
            .update(state=WorkspaceState.PENDING, progress=0, message="Queued")
        )
        if claimed != 1:
            raise WrongState(
                f"The workspace is {_current_state(workspace)}; only a stopped or failed one can start."
            )
        transaction.on_commit(lambda: spawn_workspace.delay(workspace.pk))


def stop(workspace: Workspace) -> None:
    from .tasks import stop_workspace

    rows = Workspace.objects.visible().filter(pk=workspace.pk)
    # A start under way stops by itself once the engine call returns (its task
    # owns the engine for the workspace until then); anything else is queued.
    if (
        rows.filter(state=WorkspaceState.STARTING).update(state=WorkspaceState.STOPPING, message="Stopping")
        == 1
    ):
        display_tokens.revoke(redis_client(), workspace.pk)
        return
    claimed = rows.filter(state__in=[WorkspaceState.PENDING, WorkspaceState.RUNNING]).update(
        state=WorkspaceState.STOPPING, message="Stopping"
    )
    if claimed != 1:
        raise WrongState(f"The workspace is {_current_state(workspace)}; there is nothing to stop.")
    display_tokens.revoke(redis_client(), workspace.pk)
    transaction.on_commit(lambda: stop_workspace.delay(workspace.pk))


def delete(workspace: Workspace) -> None:
    """Remove containers and network; the user's data volume is never touched."""
    from .tasks import remove_workspace

    rows = Workspace.objects.filter(pk=workspace.pk, deleting=False)
    marked = {"deleting": True, "state": WorkspaceState.STOPPING, "message": "Deleting"}
    display_tokens.revoke(redis_client(), workspace.pk)
    if rows.filter(state=WorkspaceState.STARTING).update(**marked) == 1:
        return  # the start under way removes it when the engine call returns
    if rows.exclude(state=WorkspaceState.STARTING).update(**marked) != 1:
        raise WrongState("The workspace is already being deleted.")
    transaction.on_commit(lambda: remove_workspace.delay(workspace.pk))


def _current_state(workspace: Workspace) -> str:
    return Workspace.objects.filter(pk=workspace.pk).values_list("state", flat=True).first() or "gone"


def container_name(image: Image) -> str:
    """The container's name in its workspace: the app's slug, or a saved image's name."""
    return re.sub(r"[^a-z0-9-]", "-", (image.name or image.slug).lower())[:63] or "app"


def containers_of(workspace: Workspace) -> dict[str, Image]:
    """Container name -> the image it runs: "display" and one per app."""
    return {"display": workspace.display, **{container_name(app): app for app in workspace.apps.all()}}


def _limits(image: Image) -> Limits:
    return Limits(mem_limit=image.mem_limit, cpus=image.cpus, pids_limit=image.pids_limit)


def spec_for(workspace: Workspace) -> WorkspaceSpec:
    display = workspace.display
    apps = list(workspace.apps.all())
    return WorkspaceSpec(
        workspace_id=workspace.engine_id,
        owner=workspace.owner.username,
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
    )


def issue_display_token(workspace: Workspace, mode: str) -> tuple[str, str | None]:
    """A single-use token for the display proxy, and the VNC password for that mode."""
    if workspace.state != WorkspaceState.RUNNING:
        raise WrongState(f"The workspace is {workspace.state}; its display opens once it is running.")
    endpoint = workspace.engine_state.get("endpoint")
    if not endpoint:
        raise WrongState("The workspace has no display endpoint yet; try again in a moment.")
    grant = display_tokens.Grant(
        workspace=workspace.pk, host=endpoint["host"], port=endpoint["port"], mode=mode
    )
    token = display_tokens.issue(redis_client(), grant, settings.LATTICE_DISPLAY_TOKEN_TTL)
    # The VNC server enforces view-only for the view password: input from such
    # a client never reaches the desktop, whatever the browser sends.
    password = workspace.vnc_password if mode == "control" else workspace.vnc_view_password
    return token, password
