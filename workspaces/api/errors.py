"""Every API error is JSON ``{"detail": ...}`` with the right status."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from ..lib.outages import RETRY_AFTER, redis_outage
from ..lib.refusals import Refusal


def _first_message(data) -> str:
    if isinstance(data, dict):
        for field, value in data.items():
            message = _first_message(value)
            return message if field in ("detail", "non_field_errors") else f"{field}: {message}"
    if isinstance(data, list) and data:
        return _first_message(data[0])
    return str(data)


def exception_handler(exc: Exception, context: dict) -> Response | None:
    outage = redis_outage(exc)
    if outage is not None:
        # Redis away: a 503 to ask again, not a 500 (its code lets a client tell it apart).
        return Response(
            {"detail": str(outage), "code": outage.code}, status=503, headers={"Retry-After": RETRY_AFTER}
        )
    if isinstance(exc, Refusal):
        # A service said no: its message, with the status its kind of refusal has.
        return Response({"detail": str(exc)}, status=exc.status)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        # Field errors stay available under "errors"; "detail" reads as a sentence.
        response.data = {"detail": _first_message(response.data), "errors": response.data}
    elif not isinstance(response.data, dict) or "detail" not in response.data:
        response.data = {"detail": _first_message(response.data)}
    return response


def json_404(request: HttpRequest, exception: Exception | None = None):
    """API paths answer 404 in JSON; pages keep the HTML error page."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not found."}, status=404)
    from django.views.defaults import page_not_found

    return page_not_found(request, exception)


def json_500(request: HttpRequest):
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Server error. It has been logged; try again shortly."}, status=500)
    from django.views.defaults import server_error

    return server_error(request)
