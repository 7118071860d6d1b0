"""The system check a user runs from a dashboard: every service, one step at a time."""

from __future__ import annotations

import logging
import time

from ..lib import health
from ..models import (
    Job,
    JobState,
)
from ..services import jobs
from .common import job_task

logger = logging.getLogger(__name__)


@job_task(name="workspaces.tasks.diagnostics.run_diagnostics")
def run_diagnostics(job: Job) -> None:
    """Check every service a workspace needs, one step at a time, for the user to see."""
    steps = [
        ("database", health.database_problem),
        ("Redis", health.redis_problem),
        ("Docker engine", health.docker_problem),
        ("backup storage", health.object_storage_problem),
    ]
    results = {}
    try:
        for index, (name, probe) in enumerate(steps):
            jobs.report(job, int(100 * index / len(steps)), f"Checking the {name}…")
            started = time.monotonic()
            problem = probe()
            results[name] = {
                "ok": problem is None,
                "detail": problem or "reachable",
                "ms": round(1000 * (time.monotonic() - started), 1),
            }
    except Exception as exc:
        # Whatever broke (a probe, Redis, the time limit), the page must not
        # wait forever on a job that stays "running".
        logger.exception("diagnostics job %s failed", job.pk)
        message = health.redact(f"The check stopped: {type(exc).__name__}: {exc}")[:300]
        jobs.finish(job, JobState.FAILED, message, results)
        return
    failed = [name for name, outcome in results.items() if not outcome["ok"]]
    if failed:
        jobs.finish(job, JobState.FAILED, f"Not reachable: {', '.join(failed)}.", results)
    else:
        jobs.finish(job, JobState.DONE, "Everything Lattice needs is reachable.", results)
