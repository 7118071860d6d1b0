"""Leases: how the database knows someone is working on a step, and when nobody is.

A task that claims a step (a workspace start, a seat, a job, a save) holds a
lease on its row: a time a little ahead, renewed while it works. A worker
that dies (kill -9, a lost host) stops renewing, the lease lapses within
LATTICE_LEASE_SECONDS, and reconcile hands the step to another run of its
task, which claims it by a conditional update and goes on from where the
row says the last run got to. The broker's own redelivery (after its
visibility timeout, an hour) is only a backstop: recovery never waits for it.

Taking a step up again hands it back to the queue with one more recovery
counted (``recoveries``): that count is the claim's generation, and a run
renews and settles only while it still matches, so a run believed dead that
was only slow can no longer touch the step once another has it.

Renewal runs in a thread of its own beside the work, so a step that waits a
long time on one call (an engine start, a build) keeps its lease; it runs
only inside a Celery worker (``enable_renewal``), where a lapsed lease can be
recovered: a task called directly (tests, eager mode) holds nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from types import TracebackType

from django.conf import settings
from django.db import connection
from django.db.models import Q
from django.utils import timezone

logger = logging.getLogger(__name__)

_renewal_enabled = False


def seconds() -> float:
    """How long a lease lasts without renewal: how soon a dead worker's step is taken up again."""
    return settings.LATTICE_LEASE_SECONDS


def lease_end() -> datetime:
    """The end of a lease taken or renewed now."""
    return timezone.now() + timedelta(seconds=seconds())


def lapsed(field: str = "leased_until") -> Q:
    """Rows whose lease ended (or was never taken): nobody works on them."""
    return Q(**{f"{field}__lt": timezone.now()}) | Q(**{f"{field}__isnull": True})


def enable_renewal() -> None:
    """Called as a worker starts: from now on held leases are renewed in the background."""
    global _renewal_enabled
    _renewal_enabled = True


def max_recoveries() -> int:
    """How many times a step is taken up again after its worker died before it is failed."""
    return settings.LATTICE_MAX_RECOVERIES


class Renewing:
    """Keep a lease alive while a block runs: ``renew`` is called every quarter lease.

    ``renew`` makes the conditional update(s) that extend the lease (and may
    refresh anything else the step holds, such as a start slot). A renewal
    that fails (the database busy for a moment) is logged and tried again at
    the next beat; four beats fit in a lease.
    """

    def __init__(self, renew: Callable[[], object], what: str, at_most: float | None = None):
        self.renew = renew
        self.what = what
        # A call that hangs must not hold its step for ever: after this many
        # seconds the lease is let go, and reconcile takes the step up.
        self.at_most = at_most
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Renewing:
        if _renewal_enabled:
            self._thread = threading.Thread(target=self._run, name=f"lease {self.what}", daemon=True)
            self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=seconds())

    def _run(self) -> None:
        until = time.monotonic() + self.at_most if self.at_most is not None else None
        try:
            while not self._stop.wait(seconds() / 4):
                if until is not None and time.monotonic() > until:
                    logger.error(
                        "%s: still at work after %.0f s; its lease is let go", self.what, self.at_most
                    )
                    return
                try:
                    self.renew()
                except Exception:
                    logger.warning("could not renew the lease of %s", self.what, exc_info=True)
                    # A connection the database dropped is opened anew at the next beat.
                    connection.close()
        finally:
            # Django opened a connection for this thread: it must not outlive it.
            connection.close()
