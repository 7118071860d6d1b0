"""What the tasks share: how a job's task holds its job."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

from celery import shared_task

from ..services import jobs

logger = logging.getLogger(__name__)


def job_task(**options) -> Callable:
    """A task that does one job: ``body(job, *args, **kwargs)`` runs once the job is claimed,
    holding the job's lease meanwhile; a job someone else holds, or that is over, is left alone.

    Recovery sends the task again when its worker dies (jobs.recover_lapsed),
    and the body then runs from the start: it must be safe to run twice.
    """

    def wrap(body: Callable) -> Callable:
        @functools.wraps(body)
        def run(job_id: int, *args, **kwargs) -> None:
            job = jobs.claim(job_id)
            if job is None:
                return
            with jobs.renewing(job):
                body(job, *args, **kwargs)

        return shared_task(**options)(run)

    return wrap
