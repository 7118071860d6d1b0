"""Saving a container as an image: pause, commit, measure."""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import shared_task
from django.db.models import F
from django.utils import timezone

from .. import leases
from ..engine.base import EngineError
from ..lib.engine_access import backend
from ..lib.events import publish
from ..models import (
    Image,
    ImageState,
)
from ..services import saved_images

logger = logging.getLogger(__name__)


def _image_report(image: Image, progress: int, message: str) -> None:
    image.message = message
    Image.objects.filter(pk=image.pk, state=ImageState.SAVING).update(message=message)
    publish(image.owner_id, saved_images.image_event(image, progress))


def _save_failure(exc: BaseException) -> str:
    """What the owner reads when a save fails."""
    from celery.exceptions import SoftTimeLimitExceeded

    if isinstance(exc, EngineError):
        return str(exc)
    if isinstance(exc, SoftTimeLimitExceeded):
        return f"The save took longer than {saved_images.SAVE_TIME_LIMIT // 60} minutes and was stopped; try again."
    return f"The save failed unexpectedly ({type(exc).__name__}: {exc}); try again."


def _commit(image: Image) -> None:
    workspace = image.source_workspace
    if workspace is None:
        saved_images.fail(image.pk, "The workspace it was saved from was deleted before the save began.")
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
        changes=saved_images.changes_record(changes),
    ):
        # Given up meanwhile (failed as stale): the row says failed, so no tag may stay behind.
        engine.remove_image(image.reference)
        return
    image.refresh_from_db()
    publish(image.owner_id, saved_images.image_event(image))


def _claim(image_id: int) -> bool:
    """Take the save: nobody holds it (a new save, or one reconcile handed back)."""
    return bool(
        Image.objects.filter(pk=image_id, state=ImageState.SAVING, leased_until__isnull=True).update(
            leased_until=leases.lease_end()
        )
    )


@shared_task(
    name="workspaces.tasks.saved_image.commit_container",
    soft_time_limit=saved_images.SAVE_TIME_LIMIT,
    time_limit=saved_images.SAVE_TIME_LIMIT + 30,
)
def commit_container(image_id: int) -> None:
    """Commit a saved image's container; whatever goes wrong, the row ends failed, never "saving".

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
            saved_images.fail(image_id, _save_failure(exc))
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
                saved_images.fail(
                    image.pk, f"The save was interrupted {image.recoveries + 1} times; try saving again."
                )
                continue
            if not Image.objects.filter(
                pk=image.pk, state=ImageState.SAVING, leased_until=image.leased_until
            ).update(leased_until=None, recoveries=F("recoveries") + 1):
                continue  # another pass handed it back
        commit_container.delay(image.pk)
        sent += 1
    return sent
