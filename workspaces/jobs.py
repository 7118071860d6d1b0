"""Background jobs a user waits for: queue after commit, report progress."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from .events import publish
from .models import Job, JobState, User


def queue_job(owner: User, kind: str, send) -> Job:
    """Save the job, then hand its id (never the object) to Celery after commit.

    ``send`` is a task (its ``delay`` is called with the job id) or a callable
    taking the job id, for tasks that need more ids than the job's.
    """
    job = Job.objects.create(owner=owner, kind=kind)
    dispatch = getattr(send, "delay", send)
    transaction.on_commit(lambda: dispatch(job.pk))
    return job


def claim(job_id: int) -> Job | None:
    """Move queued -> running; None when someone else (a retry) got there first."""
    if Job.objects.filter(pk=job_id, state=JobState.QUEUED).update(state=JobState.RUNNING) != 1:
        return None
    return Job.objects.get(pk=job_id)


def event(job: Job) -> dict:
    return {
        "type": "job",
        "id": job.pk,
        "kind": job.kind,
        "state": job.state,
        "progress": job.progress,
        "message": job.message,
        "result": job.result,
    }


def report(job: Job, progress: int, message: str) -> None:
    job.progress, job.message = progress, message
    Job.objects.filter(pk=job.pk).update(progress=progress, message=message)
    publish(job.owner_id, event(job))


def finish(job: Job, state: str, message: str, result: dict | None = None) -> None:
    job.state, job.message, job.result = state, message, result or {}
    if state == JobState.DONE:
        job.progress = 100
    job.finished = timezone.now()
    job.save(update_fields=["state", "message", "result", "progress", "finished"])
    publish(job.owner_id, event(job))
