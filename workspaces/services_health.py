"""Reachability of the outside services Lattice needs, in words a person can act on."""

from __future__ import annotations

import redis
from django.conf import settings
from django.db import connection

from .engine import health as engine_health


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


def docker_problem() -> str | None:
    reason = engine_health.engine_problem()
    if reason:
        return (
            f"Cannot reach the Docker engine ({reason}). Start it (`service docker start` "
            "or `dockerd &`) or set DOCKER_HOST to a reachable engine."
        )
    return None


def database_problem() -> str | None:
    try:
        connection.ensure_connection()
    except Exception as exc:  # any driver error means the same thing to a person
        return f"Cannot open the database ({exc}). Check DATABASE_URL."
    return None


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
