"""Saving a customised container as a new, private image ("Save as image").

The service validates and claims (a row in state "saving", unique per source
container, so a second simultaneous save is a clear 409); the task pauses the
container, commits it, and records sizes and what changed.
"""

from __future__ import annotations

import logging
import re
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Max, ProtectedError, Sum
from django.utils import timezone

from .. import leases
from ..engine.base import EngineError
from ..lib import queue, refusals
from ..lib.engine_access import backend
from ..lib.events import publish
from ..models import Broadcast, Image, ImageState, User, Workspace, WorkspaceState
from .catalog import DOCKER_COMPONENT
from .lifecycle import container_name, containers_of

logger = logging.getLogger(__name__)

NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
# Container names a saved image may not take in a workspace.
RESERVED_CONTAINERS = ("display",)
SAVABLE_STATES = (WorkspaceState.RUNNING, WorkspaceState.STOPPED)
# The commit task's own limit; a row still "saving" well after it (the worker
# died, or the pool cannot enforce time limits) is failed by the reconcile pass.
SAVE_TIME_LIMIT = 900
STALE_SAVE_SECONDS = 2 * SAVE_TIME_LIMIT


class SaveError(refusals.BadInput):
    """Bad input (HTTP 400)."""


class SaveConflict(refusals.Conflict):
    """A save of this container is under way, or the workspace cannot be saved now (HTTP 409)."""


class QuotaExceeded(refusals.OverLimit):
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
    if not DOCKER_COMPONENT.fullmatch(name):
        raise SaveError(
            f"'{name}' is not a valid image name: it must end with a letter or digit, and '.', '_', '__' "
            "or dashes may only stand between letters and digits (e.g. 'my-ide', 'ide.v2')."
        )
    if Image.objects.filter(owner=None, slug=name).exists():
        raise SaveError(f"'{name}' is the name of a catalog image; choose another name.")
    # A saved image runs in a workspace as a container named after it (see
    # lifecycle.container_name): it must not take the display's name or a
    # catalog app's.
    container = container_name(Image(name=name))
    if container in RESERVED_CONTAINERS:
        raise SaveError(f"'{name}' is reserved for the workspace's display; choose another name.")
    for slug in Image.objects.filter(owner=None).values_list("slug", flat=True):
        if container_name(Image(slug=slug)) == container:
            raise SaveError(
                f"'{name}' would run as the container '{container}', as the catalog image '{slug}' does; "
                "choose another name."
            )
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
        pending = mine.filter(state=ImageState.SAVING).count()
        # A save under way has no size yet: it counts 0 bytes until it is done.
        note = f" ({pending} still being saved, not counted yet)" if pending else ""
        raise QuotaExceeded(
            f"Your saved images use {used / 1024**2:.0f} MiB{note}; the most allowed is "
            f"{max_bytes / 1024**2:.0f} MiB. Delete one first."
        )


# The user part of a saved image's repository: the username itself when Docker
# takes it as it is; otherwise a readable form plus the user's id after "--",
# which a name kept as it is never holds, so two users never share a namespace.
_USER_PART_MAX = 40


def user_namespace(user: User) -> str:
    username = user.username
    if DOCKER_COMPONENT.fullmatch(username) and "--" not in username and len(username) <= _USER_PART_MAX:
        return username
    readable = re.sub(r"[^a-z0-9]+", "-", username.lower())[:_USER_PART_MAX].strip("-") or "user"
    return f"{readable}--{user.pk}"


def saved_prefix() -> str:
    """Where saved images live on the engine: under this deployment's (or test run's) prefix."""
    return f"{settings.LATTICE_ENGINE_PREFIX}/u/"


def repository_for(user: User, name: str) -> str:
    return f"{saved_prefix()}{user_namespace(user)}/{name}"


def is_saved_reference(reference: str) -> bool:
    """True for an engine reference of a saved (private) image."""
    return reference.startswith(saved_prefix())


def save(workspace: Workspace, container: str, name: str, description: str = "") -> Image:
    """Claim a save of ``container`` and queue the commit; returns the new (saving) entry."""
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
    try:
        with transaction.atomic():
            # One save of a user at a time from the quota check to the new row,
            # so two saves at once cannot both pass the check nor take the same
            # version (SQLite runs its transactions one at a time anyway:
            # IMMEDIATE mode).
            User.objects.select_for_update().only("pk").get(pk=user.pk)
            check_quota(user)
            version = (Image.objects.filter(owner=user, name=name).aggregate(v=Max("version"))["v"] or 0) + 1
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
                origin=f"saved from {parent.title} ({parent.slug})"[:200],
                **parent.inherited(),
                state=ImageState.SAVING,
                message="Queued",
                source_workspace=workspace,
                source_container=container,
            )
            queue.later(COMMIT, image.pk)
    except IntegrityError:
        # one_save_per_container: the user's lock does not cover a save of
        # this container that is under way already.
        if Image.objects.filter(
            source_workspace=workspace, source_container=container, state=ImageState.SAVING
        ).exists():
            raise SaveConflict(
                f"'{container}' is being saved already; wait for that save to finish."
            ) from None
        raise SaveConflict("Another save took this version; try again.") from None
    return image


def image_event(image: Image, progress: int = 100) -> dict:
    return {
        "type": "image",
        "id": image.pk,
        "slug": image.slug,
        "state": image.state,
        "progress": progress,
        "message": image.message,
    }


def fail(image_id: int, message: str) -> bool:
    """Mark a save that is still under way as failed and tell its owner; False when it was not saving."""
    message = message[:300]
    if not Image.objects.filter(pk=image_id, state=ImageState.SAVING).update(
        state=ImageState.FAILED, message=message
    ):
        return False
    image = Image.objects.get(pk=image_id)
    publish(image.owner_id, image_event(image))
    return True


def fail_stale_saves(older_than_seconds: float) -> int:
    """Fail saves still "saving" longer than the limit (their worker died); returns how many."""
    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    minutes = max(round(older_than_seconds / 60), 1)
    failed = 0
    for image_id in Image.objects.filter(state=ImageState.SAVING, created__lt=cutoff).values_list(
        "pk", flat=True
    ):
        failed += fail(
            image_id,
            f"The save did not finish within {minutes} minutes and was given up; try saving again.",
        )
    return failed


def in_use(image: Image) -> bool:
    active = Workspace.objects.filter(deleting=False)
    return active.filter(display=image).exists() or active.filter(apps=image).exists()


def delete(image: Image) -> None:
    """Delete a saved image's entry, then its engine image; SaveConflict says why not.

    The row goes first, in a transaction that the engine's refusal rolls back,
    so a refusal never leaves an entry without its image nor an image without
    its entry.
    """
    if image.state == ImageState.SAVING:
        raise SaveConflict("The image is still being saved; delete it when the save has finished.")
    try:
        with transaction.atomic():
            if in_use(image):
                raise SaveConflict("A workspace uses this image; delete that workspace first.")
            try:
                # Through the queryset: the caller's object keeps its pk when this is refused.
                Image.objects.filter(pk=image.pk).delete()
            except ProtectedError as exc:
                raise SaveConflict(_protected_reason(exc)) from None
            backend().remove_image(image.reference)
    except EngineError as exc:
        raise SaveConflict(f"The image could not be removed: {exc}") from None


def _protected_reason(exc: ProtectedError) -> str:
    if any(isinstance(obj, Broadcast) for obj in exc.protected_objects):
        return (
            "A classroom broadcast used this image as its display and keeps it in the classroom's "
            "history; it cannot be deleted."
        )
    return "A workspace that is being deleted still uses this image; try again when it is gone."


# How many changed paths a saved image's page lists (the summary counts them all).
SAMPLE_SIZE = 500
_KIND_ORDER = {"added": 0, "changed": 1, "deleted": 2}


def changes_record(changes: list[dict]) -> dict:
    """What is kept of the engine's diff: the per-folder summary, the total, and a sorted sample.

    Added files first, shallow paths before deep ones: a file the user made in
    their home is listed even when an install changed thousands of others.
    """
    ordered = sorted(changes, key=lambda c: (_KIND_ORDER.get(c["kind"], 3), c["path"].count("/"), c["path"]))
    return {"summary": summarise(changes), "total": len(changes), "sample": ordered[:SAMPLE_SIZE]}


def summarise(changes: list[dict], depth: int = 2) -> dict[str, dict[str, int]]:
    """Group the engine's diff by folder: {"/home/user": {"added": 3, "changed": 1, "deleted": 0}}."""
    summary: dict[str, dict[str, int]] = {}
    for change in changes:
        parts = change["path"].strip("/").split("/")
        folder = "/" + "/".join(parts[:depth]) if len(parts) > depth else "/" + "/".join(parts[:-1])
        counts = summary.setdefault(folder or "/", {"added": 0, "changed": 0, "deleted": 0})
        counts[change["kind"]] += 1
    return dict(sorted(summary.items()))


# --- the save itself: claimed, committed, measured (the task commit_container calls this) -----

COMMIT = "workspaces.tasks.saved_image.commit_container"


def _image_report(image: Image, progress: int, message: str) -> None:
    image.message = message
    Image.objects.filter(pk=image.pk, state=ImageState.SAVING).update(message=message)
    publish(image.owner_id, image_event(image, progress))


def _save_failure(exc: BaseException) -> str:
    """What the owner reads when a save fails."""
    from celery.exceptions import SoftTimeLimitExceeded

    if isinstance(exc, EngineError):
        return str(exc)
    if isinstance(exc, SoftTimeLimitExceeded):
        return f"The save took longer than {SAVE_TIME_LIMIT // 60} minutes and was stopped; try again."
    return f"The save failed unexpectedly ({type(exc).__name__}: {exc}); try again."


def _commit(image: Image) -> None:
    workspace = image.source_workspace
    if workspace is None:
        fail(image.pk, "The workspace it was saved from was deleted before the save began.")
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
    if not Image.objects.filter(pk=image.pk, state=ImageState.SAVING, recoveries=image.recoveries).update(
        state=ImageState.READY,
        message="Ready",
        size=saved["size"],
        added_size=max(saved["size"] - parent_size, 0),
        built=timezone.now(),
        changes=changes_record(changes),
    ):
        # Given up meanwhile (failed as stale): the row says failed, so no tag may stay behind.
        engine.remove_image(image.reference)
        return
    image.refresh_from_db()
    publish(image.owner_id, image_event(image))


def _claim(image_id: int) -> bool:
    """Take the save: nobody holds it (a new save, or one reconcile handed back)."""
    return bool(
        Image.objects.filter(pk=image_id, state=ImageState.SAVING, leased_until__isnull=True).update(
            leased_until=leases.lease_end()
        )
    )


def commit_now(image_id: int) -> None:
    """Commit a saved image's container (the task commit_container); whatever goes wrong, the
    row ends failed, never "saving".

    Safe to run twice: a save whose worker died is committed again from the
    start (the same tag, replaced).
    """
    if not _claim(image_id):
        return  # over, or another worker is on it
    image = Image.objects.select_related("parent", "owner", "source_workspace").get(pk=image_id)
    # recoveries is the claim's generation: a run taken for dead renews nothing once handed back.
    rows = Image.objects.filter(pk=image_id, state=ImageState.SAVING, recoveries=image.recoveries)
    try:
        with leases.Renewing(lambda: rows.update(leased_until=leases.lease_end()), f"save {image_id}"):
            _commit(image)
    except Exception as exc:
        logger.exception("Saving image %s failed", image_id)
        try:
            fail(image_id, _save_failure(exc))
        except Exception:
            # The database itself is failing: the reconcile pass fails the row later.
            logger.exception("Could not mark image %s failed", image_id)


def recover_saves() -> int:
    """Send again every save nobody holds: its worker died, or its message was lost; how many.

    A save whose worker died is handed back (no lease, one more recovery
    counted, by a conditional update on the lease it had); one taken up too
    often fails, saying why (the owner may save again). A save never claimed
    is sent again each pass until a worker takes it: the claim lets one run in.
    """
    sent = 0
    waited = timezone.now() - timedelta(seconds=leases.seconds())
    for image in Image.objects.filter(leases.lapsed(), state=ImageState.SAVING, created__lt=waited):
        if image.leased_until is not None:
            if image.recoveries >= leases.max_recoveries():
                fail(image.pk, f"The save was interrupted {image.recoveries + 1} times; try saving again.")
                continue
            if not Image.objects.filter(
                pk=image.pk, state=ImageState.SAVING, leased_until=image.leased_until
            ).update(leased_until=None, recoveries=F("recoveries") + 1):
                continue  # another pass handed it back
        queue.now(COMMIT, image.pk)
        sent += 1
    return sent
