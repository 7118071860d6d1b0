"""Saving a container as an image (services/saved_images.commit_now)."""

from __future__ import annotations

from celery import shared_task

from ..services import saved_images


@shared_task(
    name=saved_images.COMMIT,
    soft_time_limit=saved_images.SAVE_TIME_LIMIT,
    time_limit=saved_images.SAVE_TIME_LIMIT + 30,
)
def commit_container(image_id: int) -> None:
    """Commit a saved image's container; whatever goes wrong, the row ends failed, never "saving"."""
    saved_images.commit_now(image_id)
