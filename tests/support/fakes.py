"""Putting a fake engine in place: through the real seam, ``engine_access.backend``.

Fakes subclass the real DockerBackend and replace only the calls a test is
about; this makes one of them the engine of this process for one test (the
``_fresh_engine`` fixture in conftest forgets it afterwards).
"""

from __future__ import annotations

from workspaces.engine.docker_backend import DockerBackend
from workspaces.engine.specs import Endpoint
from workspaces.lib.engine_access import backend


def use_engine(settings, engine_class: type[DockerBackend]) -> DockerBackend:
    settings.LATTICE_ENGINE = f"{engine_class.__module__}.{engine_class.__qualname__}"
    backend.cache_clear()
    return backend()


def endpoint_state(path: str = "/run/lattice/displays/x/vnc.sock") -> dict:
    """engine_state for a row that pretends to run: a display whose VNC server the engine knows."""
    return {"endpoint": Endpoint(path=path, container_id="c0ffee", server_pid=4242).as_dict()}
