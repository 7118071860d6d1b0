"""Single-use, short-lived tokens that open one workspace's display.

Shared by the portal (issues and revokes them) and the display proxy
(consumes them), so it depends on Redis only, never on Django.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass

import redis

PREFIX = "lattice:display-token:"
BY_WORKSPACE = "lattice:display-tokens-of:"
MODES = ("control", "view")


@dataclass(frozen=True)
class Grant:
    workspace: int
    host: str
    port: int
    mode: str


def issue(client: redis.Redis, grant: Grant, ttl: int) -> str:
    if grant.mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}")
    token = secrets.token_urlsafe(32)
    index = f"{BY_WORKSPACE}{grant.workspace}"
    with client.pipeline() as pipe:
        pipe.set(PREFIX + token, json.dumps(asdict(grant)), ex=ttl)
        pipe.sadd(index, token)
        pipe.expire(index, ttl)
        pipe.execute()
    return token


def consume(client: redis.Redis, token: str) -> Grant | None:
    """The grant behind ``token``, at most once: GETDEL makes a second use find nothing."""
    if not token or len(token) > 128:
        return None
    raw = client.getdel(PREFIX + token)
    if raw is None:
        return None
    grant = Grant(**json.loads(raw))
    client.srem(f"{BY_WORKSPACE}{grant.workspace}", token)
    return grant


def revoke(client: redis.Redis, workspace: int) -> int:
    """Forget every unused token of a workspace; returns how many there were."""
    index = f"{BY_WORKSPACE}{workspace}"
    tokens = client.smembers(index)
    if tokens:
        client.delete(*(PREFIX + t.decode() for t in tokens))
    client.delete(index)
    return len(tokens)
