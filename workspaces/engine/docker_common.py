"""What every part of the Docker backend shares: the labels that say what an
engine object is, the user the workspaces run as, and the translation of
docker-py's errors into EngineErrors.

docker_backend.py composes the backend from its parts (docker_catalog.py,
docker_data.py, ...); they all take these from here, never from it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import docker.errors
import requests.exceptions

from .errors import EngineError, EngineUnavailable, ImageNotFound

# Every object the backend makes carries the prefix and role labels; a
# workspace's containers also carry its workspace, owner and container name.
LABEL_PREFIX = "lattice.prefix"
LABEL_WORKSPACE = "lattice.workspace"
LABEL_OWNER = "lattice.owner"
# On data volumes: the owner's stable id (the username can be reused).
LABEL_OWNER_ID = "lattice.owner-id"
LABEL_ROLE = "lattice.role"
LABEL_CONTAINER = "lattice.container"
# Container labels that describe one workspace: a saved image must not carry them.
WORKSPACE_LABELS = (LABEL_PREFIX, LABEL_WORKSPACE, LABEL_OWNER, LABEL_ROLE, LABEL_CONTAINER)
# On a data volume an import made (see docker_volumes.py).
RESTORED_LABEL = "lattice.restored"
# On an id-keyed volume made from a username-keyed one: the old volume's name.
MIGRATED_FROM_LABEL = "lattice.migrated-from"

# The workspace user, in every container and helper the backend runs.
USER_ID = 1000
USER = f"{USER_ID}:{USER_ID}"


@contextlib.contextmanager
def translated(what: str) -> Iterator[None]:
    """Turn docker-py and transport errors into EngineErrors a user can read."""
    try:
        yield
    except EngineError:
        raise
    except docker.errors.ImageNotFound as exc:
        raise ImageNotFound(f"{what}: the image is not on this engine ({exc.explanation}).") from exc
    except docker.errors.APIError as exc:
        raise EngineError(f"{what}: {exc.explanation or exc}") from exc
    except requests.exceptions.Timeout as exc:
        raise EngineError(f"{what}: the container engine did not answer in time.") from exc
    except (requests.exceptions.ConnectionError, docker.errors.DockerException) as exc:
        raise EngineUnavailable(f"{what}: cannot reach the container engine ({exc}).") from exc


def status_code(exc: BaseException) -> int | None:
    """The HTTP status of the engine's answer behind a docker-py error, if it had one."""
    return getattr(exc, "status_code", None)
