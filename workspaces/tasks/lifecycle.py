"""Starting, stopping and removing workspaces, and keeping the database and the engine together."""

from __future__ import annotations

import logging

from celery import shared_task

from ..models import (
    Workspace,
    WorkspaceState,
)
from ..services import lifecycle, teaching, thumbnails

logger = logging.getLogger(__name__)


@shared_task(name=lifecycle.SPAWN)
def spawn_workspace(workspace_id: int) -> None:
    """Start a workspace's containers (services/lifecycle.start_now)."""
    lifecycle.start_now(workspace_id)


@shared_task(name=lifecycle.STOP)
def stop_workspace(workspace_id: int, reason: str = "") -> None:
    """Stop the containers; ``reason`` (why the portal stopped it) stays as the message."""
    lifecycle.stop_now(workspace_id, reason)


@shared_task(name=lifecycle.REMOVE)
def remove_workspace(workspace_id: int) -> None:
    lifecycle.remove_now(workspace_id)


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
