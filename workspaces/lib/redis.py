"""The process-wide Redis client: one connection pool per URL, shared by every caller and thread."""

from __future__ import annotations

import functools

import redis
from django.conf import settings


def redis_client() -> redis.Redis:
    """The process's client for REDIS_URL: one connection pool, shared by every caller and thread."""
    return _client_for(settings.REDIS_URL)


@functools.lru_cache(maxsize=4)
def _client_for(url: str) -> redis.Redis:
    # redis-py clients are thread-safe, and a pool notices a fork and starts
    # afresh in the child, so one per URL serves a whole process.
    return redis.Redis.from_url(url)
