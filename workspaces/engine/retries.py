"""Engine calls tried again when the engine stumbled, not when it said no.

A Docker engine under load answers late (a read timeout), drops a connection
while it restarts, or answers 500 for a moment. For a call that is safe to
make twice (a list, an inspect, a stop, a remove), a few more tries with a
growing, jittered pause ride that out; a refusal (404, 409, a bad spec) is
final at once. Calls that make things are not retried here: a failed start
removes what it made, and the task above it starts again from scratch.
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import docker.errors
import requests.exceptions

from .errors import EngineError, EngineUnavailable

logger = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

ATTEMPTS = 3
FIRST_PAUSE = 0.5  # seconds; doubled after each try, at most MAX_PAUSE
MAX_PAUSE = 4.0


def _engine_cause(exc: BaseException) -> BaseException:
    """The docker-py or transport error behind an EngineError (``docker_common.translated`` raises from it)."""
    if isinstance(exc, EngineError) and exc.__cause__ is not None:
        return exc.__cause__
    return exc


def transient(exc: BaseException) -> bool:
    """Whether the engine stumbled (no answer, a dropped connection, a 5xx) rather than said no."""
    cause = _engine_cause(exc)
    if isinstance(cause, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
        return True
    if isinstance(cause, docker.errors.APIError):
        return cause.status_code is not None and cause.status_code >= 500
    return False


def _plainly(exc: BaseException) -> str:
    """What went wrong, in a few words: the EngineError's own (it names the step), else the cause's."""
    if isinstance(exc, EngineError):
        return str(exc).rstrip(".")
    if isinstance(exc, docker.errors.APIError):
        return f"HTTP {exc.status_code}: {exc.explanation or exc}"
    if isinstance(exc, requests.exceptions.Timeout):
        return "no answer in time"
    return f"{type(exc).__name__}: {exc}"


def pause(attempt: int) -> float:
    """Seconds to wait after failed try number ``attempt`` (1, 2, ...): exponential, full jitter."""
    return random.uniform(0, min(MAX_PAUSE, FIRST_PAUSE * 2 ** (attempt - 1)))


def retried(
    call: Callable[[], T], *, attempts: int = ATTEMPTS, sleep: Callable[[float], None] = time.sleep
) -> T:
    """``call()``, tried up to ``attempts`` times while it fails transiently.

    Past the last try: EngineUnavailable with a message a person can act on.
    Any other error goes up at once, as it was.
    """
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except Exception as exc:
            if not transient(exc):
                raise
            if attempt == attempts:
                raise EngineUnavailable(
                    f"The Docker engine did not answer ({_plainly(exc)}, {attempts} tries); "
                    "try again in a moment."
                ) from exc
            wait = pause(attempt)
            logger.warning(
                "engine call failed (%s); try %d of %d in %.1f s", _plainly(exc), attempt + 1, attempts, wait
            )
            sleep(wait)
    raise AssertionError("unreachable")  # the loop returns or raises


def idempotent(method: Callable[P, T]) -> Callable[P, T]:
    """A backend method safe to call twice: retried as ``retried`` says."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        return retried(lambda: method(*args, **kwargs))

    return wrapper
