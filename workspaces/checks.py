"""System checks: a missing Redis or Docker engine is reported with what to do.

They are warnings, not errors, so that ``migrate`` or ``createsuperuser`` still
work while a service is down; ``manage.py preflight`` (run before the web
server starts) treats them as fatal.
"""

from __future__ import annotations

from django.core.checks import Warning, register

from .lib import health


@register("lattice")
def services_reachable(app_configs=None, **kwargs) -> list[Warning]:
    found = []
    problem = health.redis_problem()
    if problem:
        found.append(Warning(problem, id="lattice.W001"))
    problem = health.docker_problem()
    if problem:
        found.append(Warning(problem, id="lattice.W002"))
    return found
