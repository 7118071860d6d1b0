"""Is the container engine reachable? Kept apart so system checks stay cheap."""

from __future__ import annotations

import docker
from docker.errors import DockerException


def engine_problem() -> str | None:
    """None when the engine answers a ping, else why it does not; never raises."""
    try:
        client = docker.from_env(timeout=3)
        try:
            client.ping()
        finally:
            client.close()
    except DockerException as exc:
        return str(exc)
    except Exception as exc:  # a malformed DOCKER_HOST fails before any connection
        return f"{type(exc).__name__}: {exc}"
    return None
