"""Reconcile: the pass that keeps nothing stuck and the database and the engine together.

It runs every LATTICE_RECONCILE_INTERVAL seconds (beat) and when a worker
starts. What needs no engine comes first (the engine may be what is down):
steps whose worker died are taken up again (their leases lapsed,
workspaces/leases.py), broadcasts whose seats are all over end. Then the
engine: running workspaces whose containers died fail, workspaces the engine
has and the database does not are removed. When nothing changed a pass is a
few indexed queries and one listing of the engine's containers.
"""

from __future__ import annotations

import logging

from celery import shared_task
from celery.signals import worker_init, worker_ready

from .. import leases
from ..display import tokens as display_tokens
from ..engine.base import EngineError
from ..lib.engine_access import backend
from ..lib.redis import redis_client
from ..models import Workspace, WorkspaceState
from ..services import broadcasts, jobs, lifecycle, saved_images

logger = logging.getLogger(__name__)


# What needs no engine, in order: each step on its own (one failing stops no other).
RECOVERY_STEPS = (
    ("workspaces", lifecycle.recover_lapsed),
    ("seats", broadcasts.recover_seats),
    ("jobs", jobs.recover_lapsed),
    ("saves", saved_images.recover_saves),
    ("broadcasts", broadcasts.finish_broadcasts),
    ("stale_saves", lambda: saved_images.fail_stale_saves(saved_images.STALE_SAVE_SECONDS)),
    ("stale_jobs", lambda: jobs.fail_stale(jobs.stale_job_seconds())),
)


@worker_init.connect
def _worker_starts(**_) -> None:
    """In a worker, held leases are renewed (a lapse then means the worker died)."""
    leases.enable_renewal()


@worker_ready.connect
def _recover_at_once(**_) -> None:
    """A worker back from a crash takes up what the dead one left without waiting for beat."""
    reconcile.delay()


@shared_task(name="workspaces.tasks.reconcile.reconcile")
def reconcile() -> dict:
    """One pass; what it fixed, by kind."""
    fixed = {"failed": 0, "orphans": 0}
    for name, step in RECOVERY_STEPS:
        try:
            fixed[name] = step()
        except Exception:
            # One broken row or a moment's outage must not stop the rest of the pass.
            logger.exception("reconcile: %s failed", name)
            fixed[name] = -1
    fixed["egress"] = _check_egress()
    engine = backend().list_workspaces()
    running = Workspace.objects.filter(state=WorkspaceState.RUNNING, deleting=False)
    # Ids first: at rest every one is running, and no row needs loading whole.
    dead = [
        pk for pk, engine_id in running.values_list("pk", "engine_id") if engine.get(engine_id) != "running"
    ]
    for ws in running.filter(pk__in=dead):
        if lifecycle.settle(
            ws,
            WorkspaceState.RUNNING,
            WorkspaceState.FAILED,
            "The workspace's containers stopped unexpectedly; start it again.",
            engine_state={"containers": lifecycle.engine_containers(ws.engine_id)},
        ):
            display_tokens.revoke(redis_client(), ws.pk)
            fixed["failed"] += 1
    known = set(Workspace.objects.values_list("engine_id", flat=True))
    for engine_id in set(engine) - known:
        backend().remove(engine_id)
        fixed["orphans"] += 1
    if any(fixed.values()):
        logger.warning("reconcile: %s", {k: v for k, v in fixed.items() if v})
    return fixed


def _check_egress() -> int:
    """1 when the apps' egress rules had gone (a firewall reload, a hand edit) and were put back.

    A start checks them, but they can go while apps run; reconcile looks
    again each pass (one `iptables -S` when nothing changed), only while
    some running workspace has apps. -1 when they could not be put back.
    """
    if not Workspace.objects.filter(state=WorkspaceState.RUNNING, apps__isnull=False).exists():
        return 0
    try:
        restored = backend().ensure_egress()
    except EngineError as exc:
        logger.error("reconcile: running apps are without their egress rules: %s", exc)
        return -1
    if restored:
        logger.warning("reconcile: the apps' egress rules had gone; put back")
    return int(restored)
