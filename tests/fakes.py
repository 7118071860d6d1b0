"""Putting a fake engine in place: through the real seam, ``engine_access.backend``.

Fakes subclass the real DockerBackend and replace only the calls a test is
about; this makes one of them the engine of this process for one test (the
``_fresh_engine`` fixture in conftest forgets it afterwards).
"""

from __future__ import annotations

from workspaces.engine.docker_backend import DockerBackend
from workspaces.engine_access import backend


def use_engine(settings, engine_class: type[DockerBackend]) -> DockerBackend:
    settings.LATTICE_ENGINE = f"{engine_class.__module__}.{engine_class.__qualname__}"
    backend.cache_clear()
    return backend()
