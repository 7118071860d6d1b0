"""Roles, role-guarded views and the login throttling hooks."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from axes.attempts import get_cool_off_threshold
from axes.handlers.database import AxesDatabaseHandler
from axes.helpers import get_client_username
from axes.models import AccessAttempt
from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.db.models import Sum
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from ..models import Role

DASHBOARDS = {
    Role.STUDENT: "student-dashboard",
    Role.TEACHER: "teacher-dashboard",
    Role.ADMIN: "admin-dashboard",
}


def role_required(*roles: str) -> Callable:
    """Anonymous visitors go to the login page; other roles get 403."""

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if request.user.role not in roles:
                raise PermissionDenied(f"This page is for {' or '.join(roles)} accounts.")
            return view(request, *args, **kwargs)

        return wrapped

    return decorator


def axes_username(request: HttpRequest, credentials: dict | None = None) -> str | None:
    """The same counter for "Alice" and "alice"."""
    username = (credentials or {}).get("username")
    if username is None and request is not None:
        username = request.POST.get("username")
    return username.lower() if isinstance(username, str) else username


def _recent_failures(request: HttpRequest, **match: str) -> int:
    attempts = AccessAttempt.objects.filter(attempt_time__gte=get_cool_off_threshold(request), **match)
    return attempts.aggregate(total=Sum("failures_since_start"))["total"] or 0


def login_failure_limit(request: HttpRequest, credentials: dict | None = None) -> int:
    """AXES_FAILURE_LIMIT: a few guesses per username, many more per address.

    axes compares the larger of the username's and the address's failure
    counts with one limit. Returning the username limit only once the username
    itself has reached it, and the address limit otherwise, makes each count
    meet its own limit: the address count alone locks only at the higher one.
    """
    per_username = settings.LATTICE_LOGIN_FAILURES_PER_USERNAME
    username = get_client_username(request, credentials)
    if username is not None and _recent_failures(request, username=username) >= per_username:
        return per_username
    return max(settings.LATTICE_LOGIN_FAILURES_PER_ADDRESS, per_username)


class LoginThrottleHandler(AxesDatabaseHandler):
    """axes' database handler, but a successful sign-in forgives only its own failures.

    axes' AXES_RESET_ON_SUCCESS deletes every attempt matching the username or
    the address, so anyone with an account could sign in to it between guesses
    at other accounts and never be locked out. Here only this username's
    failures from this address go: other usernames' counts, and the address's
    count of failures against other usernames, stay.
    """

    def user_logged_in(self, sender, request, user, **kwargs) -> None:
        super().user_logged_in(sender, request, user, **kwargs)
        address = getattr(request, "axes_ip_address", None)
        if address is not None:
            username = axes_username(request, {"username": user.get_username()})
            AccessAttempt.objects.filter(username=username, ip_address=address).delete()


LOCKOUT_MESSAGE = "Too many failed sign-in attempts. Wait a few minutes and try again."


def lockout_response(request: HttpRequest, credentials: dict | None = None, *args, **kwargs) -> HttpResponse:
    # One message whether or not the username exists: a lockout reveals nothing.
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": LOCKOUT_MESSAGE}, status=429)
    return render(request, "registration/locked_out.html", {"message": LOCKOUT_MESSAGE}, status=429)
