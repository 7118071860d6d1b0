"""The admin catalog's builds and pulls, with their logs."""

from __future__ import annotations

import logging
import re
import time

from ..engine.base import EngineError
from ..lib.events import publish
from ..models import (
    Job,
    JobState,
)
from ..services import admin_catalog, jobs
from .common import job_task

logger = logging.getLogger(__name__)


class _LogStream:
    """Build log lines: to the admin's page at once, to the job row about once a second.

    Lines are numbered, so a page that starts following late fills the gap
    from the job row without showing a line twice.
    """

    MAX_LINES = 20_000  # kept on the row; the page still gets every line

    def __init__(self, job):
        self.job, self.lines, self.count, self.flushed = job, [], 0, time.monotonic()

    def __call__(self, line: str) -> None:
        n, self.count = self.count, self.count + 1
        if n < self.MAX_LINES:
            self.lines.append(line)
        elif n == self.MAX_LINES:
            self.lines.append(f"… only the first {self.MAX_LINES} lines of the log are kept.")
        publish(self.job.owner_id, {"type": "job-log", "id": self.job.pk, "n": n, "line": line})
        step = _BUILD_STEP.match(line.strip())
        if step:
            done, total = int(step.group(1)), max(int(step.group(2)), 1)
            jobs.report(self.job, 5 + 90 * (done - 1) // total, line.strip())
        if time.monotonic() - self.flushed > 1:
            self.flush()

    def flush(self) -> None:
        Job.objects.filter(pk=self.job.pk).update(log="\n".join(self.lines))
        self.flushed = time.monotonic()


_BUILD_STEP = re.compile(r"^Step (\d+)/(\d+) : ")


def _fail_job(job: Job, exc: BaseException, what: str, log: _LogStream | None = None) -> None:
    """The job ends failed with a message a person can read, and its log kept."""
    if isinstance(exc, EngineError | admin_catalog.CatalogError):
        message = str(exc)
    else:
        logger.error("%s job %s failed", what, job.pk, exc_info=exc)
        message = f"The {what} stopped unexpectedly ({type(exc).__name__}: {exc}); try again."
    try:
        if log is not None:
            log(f"✖ {message}")
            log.flush()
        jobs.finish(job, JobState.FAILED, message, {**job.result, "error": message})
    except Exception:
        # The database itself is failing: the reconcile pass fails the job later.
        logger.exception("could not mark %s job %s failed", what, job.pk)


@job_task(
    name="workspaces.tasks.catalog.build_image",
    soft_time_limit=admin_catalog.build_timeout() + 60,
    time_limit=admin_catalog.build_timeout() + 120,
)
def build_image(job: Job) -> None:
    """Build, then add the entry; whatever goes wrong, the job ends failed and the upload is removed.

    A worker that dies mid-build leaves the upload in place (reconcile sends
    the job again, and the build starts over); an upload whose job is over
    or gone is removed by jobs.fail_stale.
    """
    log = _LogStream(job)
    try:
        jobs.report(job, 3, "Sending the build context")
        image = admin_catalog.build_entry(job, log)
        log.flush()
    except Exception as exc:
        _fail_job(job, exc, "build", log)
        return
    finally:
        jobs.discard_input(job.pk)
    jobs.finish(
        job,
        JobState.DONE,
        f"Built {image.reference}; '{image.slug}' is in the catalog.",
        {**job.result, "image": image.pk, "slug": image.slug},
    )


@job_task(
    name="workspaces.tasks.catalog.pull_image",
    soft_time_limit=admin_catalog.pull_timeout() + 60,
    time_limit=admin_catalog.pull_timeout() + 120,
)
def pull_image(job: Job) -> None:
    """Pull from the registry, then add the entry; whatever goes wrong, the job ends failed."""

    def progress(percent: int, status: str) -> None:
        jobs.report(job, percent, f"{status} ({percent}%)" if status else f"{percent}%")

    try:
        image = admin_catalog.pull_entry(job, progress)
    except Exception as exc:
        _fail_job(job, exc, "pull")
        return
    jobs.finish(
        job,
        JobState.DONE,
        f"Pulled {image.reference}; '{image.slug}' is in the catalog.",
        {**job.result, "image": image.pk, "slug": image.slug},
    )
