"""Celery tasks: thin, idempotent, reload by id, publish progress.

One module per kind of work; every task is also importable from here
(``from workspaces.tasks import spawn_workspace``), which is also how Celery's
autodiscovery finds them all.
"""

from .admin_catalog import build_image, pull_image
from .backups import back_up, back_up_due
from .classrooms import collect_classroom, rotate_vnc_passwords, run_broadcast, start_seat
from .diagnostics import run_diagnostics
from .disk import watch_disks
from .lifecycle import (
    capture_thumbnail,
    expire_control,
    remove_workspace,
    spawn_workspace,
    stop_workspace,
)
from .reconcile import reconcile
from .saved_images import commit_container

__all__ = [
    "back_up",
    "back_up_due",
    "build_image",
    "capture_thumbnail",
    "collect_classroom",
    "commit_container",
    "expire_control",
    "pull_image",
    "reconcile",
    "remove_workspace",
    "rotate_vnc_passwords",
    "run_broadcast",
    "run_diagnostics",
    "spawn_workspace",
    "start_seat",
    "stop_workspace",
    "watch_disks",
]
