"""Backing up data volumes to object storage: on a stop, on a schedule, on request."""

from __future__ import annotations

import logging

from celery import shared_task

from .. import leases
from ..engine.base import no_progress
from ..lib.redis import redis_client
from ..models import (
    JobState,
    User,
)
from ..services import backups, jobs
from ..services.failures import failure_message

logger = logging.getLogger(__name__)


@shared_task(name="workspaces.tasks.backup.back_up")
def back_up(user_id: int, reason: str, job_id: int | None = None) -> None:
    """Back up one user's data volume; with a job, the user follows it on their page."""
    job = jobs.claim(job_id) if job_id is not None else None
    if job_id is not None and job is None:
        return
    user = User.objects.get(pk=user_id)
    progress = (lambda p, m: jobs.report(job, p, m)) if job else no_progress
    client = redis_client()
    lock = f"lattice:backing-up:{user_id}"
    # One backup of a user at a time: a stop and the schedule may ask at once.
    # The lock lapses a lease after its worker died (renewed while it works),
    # so the job taken up again is not refused by its own dead run.
    lock_ms = int(leases.seconds() * 1000)
    if not client.set(lock, "1", nx=True, px=lock_ms):
        if job:
            jobs.finish(job, JobState.FAILED, "A backup of your files is already under way; try again later.")
        return

    def renew() -> None:
        client.pexpire(lock, lock_ms)
        if job:
            jobs.held(job).update(leased_until=leases.lease_end())

    try:
        with leases.Renewing(renew, f"backup of {user.username}"):
            snapshot = backups.back_up(user, reason, progress)
    except Exception as exc:
        message = failure_message(exc, "The backup")
        logger.warning("backup of %s failed: %s", user.username, message)
        if job:
            jobs.finish(job, JobState.FAILED, message)
        return
    finally:
        client.delete(lock)
    if snapshot is None:
        logger.info("backup of %s: no data volume on this engine, nothing to back up", user.username)
        if job:
            jobs.finish(job, JobState.DONE, "You have no files here yet: there is nothing to back up.")
        return
    if job:
        jobs.finish(
            job,
            JobState.DONE,
            f"Your files are backed up ({snapshot.size / 1024**2:.1f} MiB).",
            {"created": snapshot.created.isoformat(), "size": snapshot.size},
        )


@shared_task(name="workspaces.tasks.backup.back_up_due")
def back_up_due() -> int:
    """The schedule: everyone whose files may have changed since their last backup."""
    owners = backups.due()
    for user in owners:
        back_up.delay(user.pk, "schedule")
    return len(owners)
