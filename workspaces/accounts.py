"""Roles, role-guarded views and the login throttling hooks."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from .models import Role

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


LOCKOUT_MESSAGE = "Too many failed sign-in attempts. Wait a few minutes and try again."


def lockout_response(request: HttpRequest, credentials: dict | None = None, *args, **kwargs) -> HttpResponse:
    # One message whether or not the username exists: a lockout reveals nothing.
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": LOCKOUT_MESSAGE}, status=429)
    return render(request, "registration/locked_out.html", {"message": LOCKOUT_MESSAGE}, status=429)
