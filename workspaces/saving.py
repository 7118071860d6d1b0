"""Saving a customised container as a new, private image ("Save as image").

The service validates and claims (a row in state "saving", unique per source
container, so a second simultaneous save is a clear 409); the task pauses the
container, commits it, and records sizes and what changed.
"""

from __future__ import annotations

import re

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Max, Sum

from .lifecycle import containers_of
from .models import Image, ImageState, User, Workspace, WorkspaceState

NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
SAVABLE_STATES = (WorkspaceState.RUNNING, WorkspaceState.STOPPED)


class SaveError(ValueError):
    """Bad input (HTTP 400)."""


class SaveConflict(Exception):
    """A save of this container is under way, or the workspace cannot be saved now (HTTP 409)."""


class QuotaExceeded(Exception):
    """Over the saved-image quota (HTTP 429); the message has the figures."""


def check_name(name: str) -> str:
    if not isinstance(name, str) or not name:
        raise SaveError("Give the image a name, e.g. 'my-ide'.")
    if "/" in name or ":" in name or "@" in name:
        raise SaveError(
            f"'{name}' looks like a registry path, tag or digest; use a plain name such as 'my-ide' "
            "(lowercase letters, digits, '.', '_' and '-')."
        )
    if not NAME.fullmatch(name):
        raise SaveError(
            f"'{name}' is not a valid image name: use 1 to 64 lowercase letters, digits, '.', '_' or '-', "
            "starting with a letter or digit."
        )
    if Image.objects.filter(owner=None, slug=name).exists():
        raise SaveError(f"'{name}' is the name of a catalog image; choose another name.")
    return name


def quota_of(user: User) -> tuple[int, int]:
    count = user.saved_images_max_count
    size = user.saved_images_max_bytes
    return (
        settings.LATTICE_SAVED_IMAGES_MAX_COUNT if count is None else count,
        settings.LATTICE_SAVED_IMAGES_MAX_BYTES if size is None else size,
    )


def check_quota(user: User) -> None:
    max_count, max_bytes = quota_of(user)
    mine = Image.objects.filter(owner=user).exclude(state=ImageState.FAILED)
    count = mine.count()
    used = mine.aggregate(total=Sum("added_size"))["total"] or 0
    if count >= max_count:
        raise QuotaExceeded(
            f"You have {count} saved images; the most allowed is {max_count}. Delete one first."
        )
    if used >= max_bytes:
        raise QuotaExceeded(
            f"Your saved images use {used / 1024**2:.0f} MiB; the most allowed is {max_bytes / 1024**2:.0f} MiB. "
            "Delete one first."
        )


def repository_for(user: User, name: str) -> str:
    # Docker repository components are [a-z0-9._-]; usernames may hold "@" or "+".
    safe_user = re.sub(r"[^a-z0-9._-]", lambda m: f"-{ord(m.group()):x}-", user.username.lower())
    return f"lattice/u/{safe_user}/{name}"


def save(workspace: Workspace, container: str, name: str, description: str = "") -> Image:
    """Claim a save of ``container`` and queue the commit; returns the new (saving) entry."""
    from .tasks import commit_container

    check_name(name)
    if workspace.state not in SAVABLE_STATES:
        raise SaveConflict(f"The workspace is {workspace.state}; save it when it is running or stopped.")
    sources = containers_of(workspace)
    if container not in sources:
        raise SaveError(
            f"This workspace has no container '{container}'; it has {', '.join(sorted(sources))}."
        )
    parent = sources[container]
    user = workspace.owner
    check_quota(user)
    for _ in range(3):  # a concurrent save of another container may take the version first
        version = (Image.objects.filter(owner=user, name=name).aggregate(v=Max("version"))["v"] or 0) + 1
        try:
            with transaction.atomic():
                image = Image.objects.create(
                    slug=f"{user.username}/{name}:{version}",
                    reference=f"{repository_for(user, name)}:{version}",
                    kind=parent.kind,
                    title=f"{name} (v{version})",
                    description=description or f"Saved from {parent.title}",
                    icon=parent.icon,
                    owner=user,
                    name=name,
                    version=version,
                    parent=parent,
                    mem_limit=parent.mem_limit,
                    cpus=parent.cpus,
                    pids_limit=parent.pids_limit,
                    kiosk=parent.kiosk,
                    state=ImageState.SAVING,
                    message="Queued",
                    source_workspace=workspace,
                    source_container=container,
                )
        except IntegrityError:
            if Image.objects.filter(
                source_workspace=workspace, source_container=container, state=ImageState.SAVING
            ).exists():
                raise SaveConflict(
                    f"'{container}' is being saved already; wait for that save to finish."
                ) from None
            continue
        transaction.on_commit(lambda image_id=image.pk: commit_container.delay(image_id))
        return image
    raise SaveConflict("Another save took this version; try again.")


def in_use(image: Image) -> bool:
    active = Workspace.objects.filter(deleting=False)
    return active.filter(display=image).exists() or active.filter(apps=image).exists()


def summarise(changes: list[dict], depth: int = 2) -> dict[str, dict[str, int]]:
    """Group the engine's diff by folder: {"/home/user": {"added": 3, "changed": 1, "deleted": 0}}."""
    summary: dict[str, dict[str, int]] = {}
    for change in changes:
        parts = change["path"].strip("/").split("/")
        folder = "/" + "/".join(parts[:depth]) if len(parts) > depth else "/" + "/".join(parts[:-1])
        counts = summary.setdefault(folder or "/", {"added": 0, "changed": 0, "deleted": 0})
        counts[change["kind"]] += 1
    return dict(sorted(summary.items()))
