"""Reachability of the outside services Lattice needs, in words a person can act on.

Every message here may reach a dashboard's System check, a job's log or
``manage.py check``: each one goes through ``redact`` so that no URL's
password (Redis, the database, an S3 endpoint) or configured secret is shown.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from urllib.parse import unquote, urlsplit

import redis
from django.conf import settings
from django.db import connection

from ..engine import health as engine_health

# user:password@ in a URL (with or without its scheme): the password goes.
_USERINFO = re.compile(r"(?P<user>(?:[a-z][a-z0-9+.-]*://)?[^\s:/@'\"]*):(?P<password>[^\s@/'\"]+)@", re.I)
HIDDEN = "***"


def _configured_secrets() -> list[str]:
    """Secrets in settings, so they are hidden wherever a driver's message repeats them."""
    found = [settings.LATTICE_S3_SECRET_KEY, settings.SECRET_KEY]
    found += [db.get("PASSWORD") or "" for db in settings.DATABASES.values()]
    for url in (settings.REDIS_URL, settings.LATTICE_S3_ENDPOINT_URL, settings.LATTICE_OBJECT_STORAGE):
        try:
            password = urlsplit(url).password
        except ValueError:
            password = None
        if password:
            found += [password, unquote(password)]
    # Short ones would blot out ordinary words; a URL's own password is caught by the pattern.
    return sorted({secret for secret in found if len(secret) >= 6}, key=len, reverse=True)


def redact(text: str) -> str:
    """The text with every URL's password and every configured secret replaced by ***."""
    text = _USERINFO.sub(lambda m: f"{m['user']}:{HIDDEN}@", text)
    for secret in _configured_secrets():
        text = text.replace(secret, HIDDEN)
    return text


def _redacted(probe: Callable[..., str | None]) -> Callable[..., str | None]:
    @functools.wraps(probe)
    def checked(*args: object, **kwargs: object) -> str | None:
        problem = probe(*args, **kwargs)
        return None if problem is None else redact(problem)

    return checked


@_redacted
def redis_problem(url: str | None = None) -> str | None:
    url = url or settings.REDIS_URL
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1).ping()
    except ValueError as exc:  # not a URL redis-py understands, e.g. "localhost:6379"
        return (
            f"REDIS_URL={url!r} is not a Redis URL ({exc}). "
            "Write it as redis://HOST:6379/0 (rediss:// for TLS, unix:///path/redis.sock for a socket)."
        )
    except redis.RedisError as exc:
        return (
            f"Cannot reach Redis at {url} ({exc}). Start it (`make run` starts one, "
            "or `redis-server`) or set REDIS_URL to a reachable Redis."
        )
    return None


@_redacted
def docker_problem() -> str | None:
    reason = engine_health.engine_problem()
    if reason:
        return (
            f"Cannot reach the Docker engine ({reason}). Start it (`service docker start` "
            "or `dockerd &`) or set DOCKER_HOST to a reachable engine."
        )
    return None


@_redacted
def database_problem() -> str | None:
    try:
        connection.ensure_connection()
    except Exception as exc:  # any driver error means the same thing to a person
        return f"Cannot open the database ({exc}). Check DATABASE_URL."
    return None


@_redacted
def object_storage_problem() -> str | None:
    from .object_store import StoreError, store

    try:
        store().check()
    except StoreError as exc:
        return (
            f"Cannot use the backup storage {settings.LATTICE_OBJECT_STORAGE} ({exc}). "
            "Check LATTICE_OBJECT_STORAGE and, for S3, LATTICE_S3_ENDPOINT_URL and its keys."
        )
    return None
