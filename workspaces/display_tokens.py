"""Single-use, short-lived tokens that open one workspace's display, and their revocation.

Shared by the portal (issues and revokes them) and the display proxy
(consumes them, and closes connections whose scope was revoked), so it
depends on Redis only, never on Django.

A grant belongs to scopes: always its workspace ("workspace:12"), plus what
it was issued for, such as a demo to a class ("demo:3") or a teacher's
control of a student's screen ("control:12"). Revoking a scope forgets its
unused tokens and ends, within a second, every connection opened before.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass

import redis

PREFIX = "lattice:display-token:"
TOKENS_OF = "lattice:display-tokens-of:"
REVOKED = "lattice:display-revoked:"
MODES = ("control", "view")
# Connections last longer than tokens; a revocation is remembered this long.
REVOCATION_MEMORY = 24 * 3600


@dataclass(frozen=True)
class Grant:
    workspace: int
    socket: str  # the display's VNC socket on the engine's host
    mode: str
    scopes: tuple[str, ...] = ()

    @property
    def all_scopes(self) -> tuple[str, ...]:
        return (workspace_scope(self.workspace), *self.scopes)


def workspace_scope(workspace: int) -> str:
    return f"workspace:{workspace}"


def now(client: redis.Redis) -> float:
    """Redis's clock: the portal and the proxy may run on hosts whose clocks differ."""
    seconds, micros = client.time()
    return seconds + micros / 1e6


def issue(client: redis.Redis, grant: Grant, ttl: int) -> str:
    if grant.mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}")
    token = secrets.token_urlsafe(32)
    with client.pipeline() as pipe:
        pipe.set(PREFIX + token, json.dumps(asdict(grant)), ex=ttl)
        for scope in grant.all_scopes:
            pipe.sadd(TOKENS_OF + scope, token)
            pipe.expire(TOKENS_OF + scope, ttl)
        pipe.execute()
    return token


def consume(client: redis.Redis, token: str) -> Grant | None:
    """The grant behind ``token``, at most once: GETDEL makes a second use find nothing."""
    if not token or len(token) > 128:
        return None
    raw = client.getdel(PREFIX + token)
    if raw is None:
        return None
    fields = json.loads(raw)
    grant = Grant(**{**fields, "scopes": tuple(fields.get("scopes", ()))})
    with client.pipeline() as pipe:
        for scope in grant.all_scopes:
            pipe.srem(TOKENS_OF + scope, token)
        pipe.execute()
    return grant


def revoke(client: redis.Redis, workspace: int) -> int:
    """End every token and connection of a workspace's display (it stops, or is deleted)."""
    return revoke_scope(client, workspace_scope(workspace))


def revoke_scope(client: redis.Redis, scope: str) -> int:
    """Forget the scope's unused tokens and end its open connections; how many tokens there were."""
    index = TOKENS_OF + scope
    tokens = client.smembers(index)
    with client.pipeline() as pipe:
        if tokens:
            pipe.delete(*(PREFIX + t.decode() for t in tokens))
        pipe.delete(index)
        pipe.set(REVOKED + scope, repr(now(client)), ex=REVOCATION_MEMORY)
        pipe.execute()
    return len(tokens)


def revoked_since(client: redis.Redis, scopes: tuple[str, ...], opened: float) -> bool:
    """Was any of these scopes revoked at or after ``opened`` (Redis time)?"""
    stamps = client.mget([REVOKED + scope for scope in scopes])
    return any(stamp is not None and float(stamp) >= opened for stamp in stamps)
