"""The disk watch's beat task (see services/disk_watch.py)."""

from __future__ import annotations

from celery import shared_task

from ..services import disk_watch


@shared_task(name="workspaces.tasks.disk.watch_disks")
def watch_disks() -> list[int]:
    """Stop running workspaces whose containers wrote more than their limit; the ids stopped."""
    return disk_watch.watch()
