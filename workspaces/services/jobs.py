"""Background jobs a user waits for: queue after commit, report progress, recover.

A job names its task and the task's arguments, so when the worker running
it dies (its lease lapses, workspaces/leases.py) reconcile sends it again;
the task claims the job once more and starts over, which every job's work
allows (a build, a pull, a collect, a backup, a check: each may run twice).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from .. import leases
from ..lib import queue
from ..lib.events import publish
from ..models import Job, JobState, User

logger = logging.getLogger(__name__)


def queue_job(owner: User, kind: str, task: str, result: dict | None = None, **task_kwargs) -> Job:
    """Save the job, then hand its id (never the object) to Celery after commit.

    ``task`` is a registered task's name (what Job.task keeps), called as
    ``task(job_id=…, **task_kwargs)`` (ids only, in JSON);
    ``result`` is what the job starts with (its input, for the task to read).
    """
    job = Job.objects.create(owner=owner, kind=kind, result=result or {}, task=task, task_kwargs=task_kwargs)
    transaction.on_commit(lambda: send(job))
    return job


def send(job: Job) -> None:
    """Hand the job to its task (again, when recovering it)."""
    queue.now(job.task, job_id=job.pk, **job.task_kwargs)


def claim(job_id: int) -> Job | None:
    """Take the job, queued -> running; None when another run got there first, or it is over.

    The job's ``recoveries`` then is the claim's generation: finish(),
    report() and the lease's renewal touch the row only while it matches.
    """
    if not Job.objects.filter(pk=job_id, state=JobState.QUEUED).update(
        state=JobState.RUNNING, leased_until=leases.lease_end()
    ):
        return None
    return Job.objects.get(pk=job_id)


def held(job: Job):
    """The job's row while this run holds it."""
    return Job.objects.filter(pk=job.pk, state=JobState.RUNNING, recoveries=job.recoveries)


def renewing(job: Job) -> leases.Renewing:
    """Hold the job's lease while its work runs."""
    rows = held(job)
    return leases.Renewing(lambda: rows.update(leased_until=leases.lease_end()), f"job {job.pk}")


def recover_lapsed() -> int:
    """Send again every queued or running job whose lease lapsed; how many.

    A running job goes back to queued with one more recovery counted (its
    worker died; the next run starts it over), and fails, saying why, once
    taken up LATTICE_MAX_RECOVERIES times. Each is moved by a conditional
    update on the lease it had, so two passes at once send it once.
    """
    sent = 0
    lapsed = Job.objects.filter(leases.lapsed(), state__in=[JobState.QUEUED, JobState.RUNNING]).exclude(
        task=""
    )
    for job in lapsed:
        if job.state == JobState.RUNNING and job.recoveries >= leases.max_recoveries():
            _give_up(job, f"Stopped: its worker stopped {job.recoveries + 1} times while on it. Try again.")
            continue
        if not queue.registered(job.task):
            _give_up(job, "Stopped: this version of Lattice no longer does this kind of job. Try again.")
            continue
        again = {"state": JobState.QUEUED, "leased_until": leases.lease_end()}
        if job.state == JobState.RUNNING:
            again.update(recoveries=F("recoveries") + 1, message="Taken up again after its worker stopped")
        if Job.objects.filter(pk=job.pk, state=job.state, leased_until=job.leased_until).update(**again):
            send(job)
            sent += 1
    return sent


def _give_up(job: Job, message: str) -> bool:
    if not Job.objects.filter(pk=job.pk, state=job.state).update(
        state=JobState.FAILED, message=message[:300], finished=timezone.now()
    ):
        return False
    job.state, job.message = JobState.FAILED, message[:300]
    publish(job.owner_id, event(job))
    return True


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
    if held(job).update(progress=progress, message=message):
        publish(job.owner_id, event(job))


def finish(job: Job, state: str, message: str, result: dict | None = None) -> bool:
    """End a job its task claimed; False (and nothing changed) when it was given up meanwhile."""
    fields = {"state": state, "message": message[:300], "result": result or {}, "finished": timezone.now()}
    if state == JobState.DONE:
        fields["progress"] = 100
    if held(job).update(**fields) != 1:
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
        failed += _give_up(job, message)
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
