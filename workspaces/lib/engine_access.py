"""Which engine backend this process uses, chosen by settings.

``LATTICE_ENGINE`` is a backend name ("docker") or a dotted path to a class,
which is how tests put a fake that subclasses the real backend in the worker.
"""

from __future__ import annotations

from functools import lru_cache

from django.conf import settings
from django.utils.module_loading import import_string

from ..engine import get_backend
from ..engine.base import Backend


@lru_cache(maxsize=1)
def backend() -> Backend:
    name = settings.LATTICE_ENGINE
    options = {"prefix": settings.LATTICE_ENGINE_PREFIX, "socket_root": settings.LATTICE_DISPLAY_SOCKET_DIR}
    if settings.LATTICE_EGRESS_FIREWALL == "site":
        options["egress_by_site"] = True
    if "." in name:
        return import_string(name)(**options)
    return get_backend(name, **options)
