"""System checks: a missing Redis or Docker engine is reported with what to do.

They are warnings, not errors, so that ``migrate`` or ``createsuperuser`` still
work while a service is down; ``manage.py preflight`` (run before the web
server starts) treats them as fatal.
"""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Error, Warning, register

from . import services_health


@register("lattice")
def services_reachable(app_configs=None, **kwargs) -> list[Warning]:
    found = []
    problem = services_health.redis_problem()
    if problem:
        found.append(Warning(problem, id="lattice.W001"))
    problem = services_health.docker_problem()
    if problem:
        found.append(Warning(problem, id="lattice.W002"))
    return found


@register("lattice")
def broadcast_concurrency(app_configs=None, **kwargs) -> list[Error]:
    """A bound of 0 would start nobody's workspace, ever: refuse it at start-up."""
    value = settings.LATTICE_BROADCAST_CONCURRENCY
    if value <= 0:
        return [
            Error(
                f"LATTICE_BROADCAST_CONCURRENCY={value}: it must be at least 1.",
                hint="It is how many classroom workspaces start at once across the site; "
                "about 2 per CPU core is a good start.",
                id="lattice.E010",
            )
        ]
    return []
