"""Redis out of reach: one refusal, the same words for the API and the pages.

Redis carries the task queue, the live updates and the display tokens. When it
is down (refused) or frozen (no answer within the clients' timeouts), any
request that needs it fails with one of the errors below. The API's
exception handler and ``RedisOutageMiddleware`` turn them into a 503 that says
so, instead of a 500 with a traceback in the log for each request.
"""

from __future__ import annotations

import logging

import kombu.exceptions
import redis.exceptions
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from .refusals import Unavailable

logger = logging.getLogger(__name__)

# redis-py's for the clients Lattice opens itself (display tokens, locks),
# kombu's for a task queued while the broker (the same Redis) is away.
REDIS_ERRORS = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    kombu.exceptions.OperationalError,
)
REDIS_UNAVAILABLE = "redis_unavailable"


class RedisUnavailable(Unavailable):
    """Redis did not answer; asking again once it is back works (HTTP 503)."""

    code = REDIS_UNAVAILABLE

    def __init__(self, message: str = "") -> None:
        super().__init__(
            message
            or "Lattice cannot reach its Redis (queue and live updates) just now; try again in a moment."
        )


def redis_outage(exc: BaseException) -> RedisUnavailable | None:
    """The refusal to answer with when ``exc`` (or what caused it) is Redis out of reach; else None."""
    seen = exc
    for _ in range(5):  # a library may wrap the driver's error; a few links are enough
        if isinstance(seen, RedisUnavailable):
            return seen
        if isinstance(seen, REDIS_ERRORS):
            # One line, not a traceback: every request fails alike while it lasts.
            logger.warning("Redis out of reach: %s: %s", type(seen).__name__, seen)
            return RedisUnavailable()
        seen = seen.__cause__ or seen.__context__
        if seen is None:
            return None
    return None


class RedisOutageMiddleware:
    """Pages: a 503 page that says Redis is away and to try again, not a server error."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        outage = redis_outage(exception)
        if outage is None:
            return None
        return unavailable_response(request, outage)


def unavailable_response(request: HttpRequest, outage: RedisUnavailable) -> HttpResponse:
    """503 in JSON for the API, the 503 page for pages."""
    if request.path.startswith("/api/"):
        response = JsonResponse({"detail": str(outage), "code": outage.code}, status=503)
    else:
        response = render(request, "503.html", {"message": str(outage)}, status=503)
    response["Retry-After"] = RETRY_AFTER
    return response


# Seconds: clients (and browsers' own retry logic) may read when to ask again.
RETRY_AFTER = "5"
