"""Background jobs a user waits for: queue after commit, report progress."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from .events import publish
from .models import Job, JobState, User


def queue_job(owner: User, kind: str, send, result: dict | None = None) -> Job:
    """Save the job, then hand its id (never the object) to Celery after commit.

    ``send`` is a task (its ``delay`` is called with the job id) or a callable
    taking the job id, for tasks that need more ids than the job's; ``result``
    is what the job starts with (its input, for the task to read).
    """
    job = Job.objects.create(owner=owner, kind=kind, result=result or {})
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
    """Progress of a running job; a late line of a job given up meanwhile changes nothing."""
    message = message[:300]  # the column's length
    job.progress, job.message = progress, message
    if Job.objects.filter(pk=job.pk, state=JobState.RUNNING).update(progress=progress, message=message):
        publish(job.owner_id, event(job))


def finish(job: Job, state: str, message: str, result: dict | None = None) -> bool:
    """End a job its task claimed; False (and nothing changed) when it was given up meanwhile."""
    fields = {"state": state, "message": message[:300], "result": result or {}, "finished": timezone.now()}
    if state == JobState.DONE:
        fields["progress"] = 100
    if Job.objects.filter(pk=job.pk, state=JobState.RUNNING).update(**fields) != 1:
        return False
    for name, value in fields.items():
        setattr(job, name, value)
    publish(job.owner_id, event(job))
    return True


# --- jobs that never end, and the files they were given -------------------------


def _inputs_folder() -> Path:
    return settings.VAR_DIR / "job-inputs"


def input_path(job: Job) -> Path:
    """Where a job's input file (an uploaded build context) waits for the worker."""
    folder = _inputs_folder()
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{job.pk}.input"


def discard_input(job_id: int) -> None:
    (_inputs_folder() / f"{job_id}.input").unlink(missing_ok=True)


def stale_job_seconds() -> float:
    """After how long a queued or running job is given up: longer than any build or pull may take."""
    return settings.LATTICE_JOB_STALE_SECONDS


def fail_stale(older_than_seconds: float) -> int:
    """Fail jobs queued or running for longer than that; how many.

    Their worker died, the task was lost, or a wait hung: the page would show
    "running" forever. A job that finishes meanwhile keeps its own result (the
    update is conditional), and a late finish() or report() changes nothing.
    Input files of jobs that are over (or gone) are removed too.
    """
    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    minutes = max(1, round(older_than_seconds / 60))
    message = f"Given up: no result after {minutes} minutes (the worker may have restarted). Try again."
    failed = 0
    for job in Job.objects.filter(state__in=[JobState.QUEUED, JobState.RUNNING], created__lt=cutoff):
        if (
            Job.objects.filter(pk=job.pk, state=job.state).update(
                state=JobState.FAILED, message=message, finished=timezone.now()
            )
            == 1
        ):
            failed += 1
            job.state, job.message = JobState.FAILED, message
            publish(job.owner_id, event(job))
    folder = _inputs_folder()
    if folder.is_dir():
        waiting = Job.objects.filter(state__in=[JobState.QUEUED, JobState.RUNNING])
        keep = {str(pk) for pk in waiting.values_list("pk", flat=True)}
        # A grace period: a file may belong to a job whose request has not committed yet.
        grace = (timezone.now() - timedelta(minutes=10)).timestamp()
        for path in folder.glob("*.input"):
            if path.stem not in keep and path.stat().st_mtime < grace:
                path.unlink(missing_ok=True)
    return failed
