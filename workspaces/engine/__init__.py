"""The container engine layer: the only code in Lattice that imports docker.

Plain dataclasses in (specs.py), plain results out; no Django here.
"""

from __future__ import annotations

from typing import Any

from .base import Backend
from .errors import EngineError, ImageNotFound, StartFailed, StartTimeout
from .specs import ContainerSpec, ContainerState, Endpoint, Limits, WorkspaceSpec

__all__ = [
    "Backend",
    "ContainerSpec",
    "ContainerState",
    "Endpoint",
    "EngineError",
    "ImageNotFound",
    "Limits",
    "StartFailed",
    "StartTimeout",
    "WorkspaceSpec",
    "get_backend",
]


def get_backend(name: str = "docker", **opts: Any) -> Backend:
    """The backend called name, built with opts (e.g. prefix="lattice")."""
    if name == "docker":
        # Imported here so that specs and errors load without docker-py.
        from .docker_backend import DockerBackend

        return DockerBackend(**opts)
    raise ValueError(f"unknown engine backend {name!r} (known: docker)")
