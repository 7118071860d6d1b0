"""Wait for Redis and the Docker engine, then fail loudly if either is missing.

Run before the web server starts, so a misconfiguration is a clear message at
start-up rather than a broken page later.
"""

from __future__ import annotations

import time

from django.core.management.base import BaseCommand, CommandError

from workspaces.lib import health


class Command(BaseCommand):
    help = "Check that Redis and the Docker engine are reachable (waits up to --wait seconds)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--wait", type=float, default=15.0)

    def handle(self, *args, wait: float, **options) -> None:
        deadline = time.monotonic() + wait
        while True:
            problems = [p for p in (health.redis_problem(), health.docker_problem()) if p]
            if not problems:
                self.stdout.write("Redis and the Docker engine are reachable.")
                return
            if time.monotonic() > deadline:
                raise CommandError("\n".join(problems))
            time.sleep(0.3)
