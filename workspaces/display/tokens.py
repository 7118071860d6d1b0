"""Single-use, short-lived tokens that open one workspace's display, and their revocation.

Shared by the portal (issues and revokes them) and the display proxy
(consumes them, and closes connections whose scope was revoked), so it
depends on Redis only, never on Django.

A grant belongs to scopes: always its workspace ("workspace:12"), plus what
it was issued for, such as a demo to a class ("demo:3") or a teacher's
control of a student's screen ("control:12"). Revoking a scope forgets its
unused tokens and ends, within a second, every connection opened before.

Every key here starts with ``lattice:display-``: the display proxy's Redis
user may touch those keys only (scripts/redis).
"""

from __future__ import annotations

import json
import secrets
import uuid
from dataclasses import asdict, dataclass

import redis

from .sockets import DisplayTarget

PREFIX = "lattice:display-token:"
TOKENS_OF = "lattice:display-tokens-of:"
REVOKED = "lattice:display-revoked:"
CONNECTIONS = "lattice:display-connections:"
REQUESTS = "lattice:display-requests:"
MODES = ("control", "view")
# Connections last longer than tokens; a revocation is remembered this long.
REVOCATION_MEMORY = 24 * 3600
# An open connection says it is alive this often; one silent for
# CONNECTION_LIFE (its process was killed) no longer counts.
CONNECTION_HEARTBEAT = 30
CONNECTION_LIFE = 3 * CONNECTION_HEARTBEAT


@dataclass(frozen=True)
class Grant:
    workspace: int
    socket: str  # the display's VNC socket on the engine's host
    mode: str
    scopes: tuple[str, ...] = ()
    user: int | None = None  # who asked for it: their connections are counted
    container_id: str = ""  # the display's container, whose VNC server alone may answer
    server_pid: int = 0  # that server's pid on the engine's host

    @property
    def all_scopes(self) -> tuple[str, ...]:
        return (workspace_scope(self.workspace), *self.scopes)

    def target(self) -> DisplayTarget:
        """Where the proxy connects; DisplayRefused when the grant does not name the display's server."""
        return DisplayTarget.from_path(self.socket, self.container_id, self.server_pid)


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


# -- counting: connections per workspace and per user, token requests per user --


def open_connection(client: redis.Redis, grant: Grant, per_workspace: int, per_user: int) -> str | None:
    """Count a new connection in; its id, or None (and not counted) when a limit is reached.

    Each count is a sorted set of connection ids scored by their last
    heartbeat, so a connection whose process died stops counting on its own.
    """
    connection = uuid.uuid4().hex
    stamp = now(client)
    keys = _connection_keys(grant)
    with client.pipeline() as pipe:
        for key in keys:
            pipe.zremrangebyscore(key, "-inf", stamp - CONNECTION_LIFE)
            pipe.zadd(key, {connection: stamp})
            pipe.expire(key, CONNECTION_LIFE)
            pipe.zcard(key)
        counts = pipe.execute()[3::4]
    if counts[0] > per_workspace or counts[1] > per_user:
        close_connection(client, grant, connection)
        return None
    return connection


def connection_alive(client: redis.Redis, grant: Grant, connection: str) -> None:
    stamp = now(client)
    with client.pipeline() as pipe:
        for key in _connection_keys(grant):
            pipe.zadd(key, {connection: stamp})
            pipe.expire(key, CONNECTION_LIFE)
        pipe.execute()


def close_connection(client: redis.Redis, grant: Grant, connection: str) -> None:
    with client.pipeline() as pipe:
        for key in _connection_keys(grant):
            pipe.zrem(key, connection)
        pipe.execute()


def _connection_keys(grant: Grant) -> tuple[str, str]:
    return (f"{CONNECTIONS}workspace:{grant.workspace}", f"{CONNECTIONS}user:{grant.user}")


def count_token_request(client: redis.Redis, user: int, window: int = 60) -> int:
    """How many display tokens ``user`` asked for in the current window, this request included."""
    key = f"{REQUESTS}{user}:{int(now(client)) // window}"
    with client.pipeline() as pipe:
        pipe.incr(key)
        pipe.expire(key, window)
        return pipe.execute()[0]
