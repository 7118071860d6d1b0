"""Time one reconcile pass when nothing changed, as the site grows.

Reconcile runs every LATTICE_RECONCILE_INTERVAL seconds; this measures what a
pass costs when it has nothing to do: a site of N running workspaces (with
apps, so the egress check runs), N running seats of a finished broadcast and
N finished jobs, their leases long lapsed, as they are at rest. For each N it
prints the median and p95 of a pass and the SQL queries one pass makes,
beside the baseline measured in the same run: the same pass on an empty site
(N = 0).

No worker, Docker, iptables or Redis: the task is called as a function, on a
throw-away SQLite database, with an engine that subclasses the real
DockerBackend and answers that all N are running and the egress rules are in
place. REDIS_URL names a port nobody listens on, so a pass that touched Redis
would fail here rather than go unnoticed (at rest it must not).

    .venv/bin/python bench/reconcile.py [--sizes 0 50 200 1000] [--passes 20]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from workspaces.engine.docker_backend import DockerBackend  # noqa: E402


def free_port() -> int:
    """As tests/support/services.py's, which is not imported: importing it starts a Redis and looks at Docker."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class AtRestEngine(DockerBackend):
    """The real backend, but every workspace of the database is running and the egress rules are there."""

    running: dict[str, str] = {}

    def list_workspaces(self) -> dict[str, str]:
        return dict(self.running)

    def ensure_egress(self) -> bool:
        return False


def grow_site(size: int, images: dict) -> None:
    """Add rows until the site has `size` students, each with a running workspace, a running seat and a done job."""
    from django.utils import timezone

    from workspaces.models import (
        Broadcast,
        BroadcastState,
        Classroom,
        Job,
        JobState,
        Seat,
        SeatState,
        User,
        Workspace,
        WorkspaceState,
    )

    have = User.objects.filter(username__startswith="bench-student").count()
    if size <= have:
        return
    lapsed = timezone.now() - timedelta(hours=1)  # at rest every lease lapsed long ago
    teacher, _ = User.objects.get_or_create(username="bench-teacher", defaults={"role": "teacher"})
    classroom, _ = Classroom.objects.get_or_create(name="Bench")
    classroom.teachers.add(teacher)
    # No password hashing: unusable passwords, as the rows are never logged in.
    students = User.objects.bulk_create(
        [User(username=f"bench-student{n}", password="!") for n in range(have, size)]
    )
    classroom.students.add(*students)
    workspaces = Workspace.objects.bulk_create(
        [
            Workspace(
                owner=s,
                display=images["display"],
                state=WorkspaceState.RUNNING,
                progress=100,
                leased_until=lapsed,
            )
            for s in students
        ]
    )
    Workspace.apps.through.objects.bulk_create(
        [Workspace.apps.through(workspace_id=ws.pk, image_id=images["app"].pk) for ws in workspaces]
    )
    # One finished broadcast per 30 students, as a class.
    for start in range(0, len(students), 30):
        broadcast = Broadcast.objects.create(
            classroom=classroom, teacher=teacher, display=images["display"], state=BroadcastState.DONE
        )
        Seat.objects.bulk_create(
            [
                Seat(
                    broadcast=broadcast, student=s, workspace=ws, state=SeatState.RUNNING, leased_until=lapsed
                )
                for s, ws in zip(students[start : start + 30], workspaces[start : start + 30], strict=True)
            ]
        )
    Job.objects.bulk_create(
        [
            Job(
                owner=s,
                kind="collect",
                state=JobState.DONE,
                progress=100,
                finished=lapsed,
                leased_until=lapsed,
            )
            for s in students
        ]
    )
    AtRestEngine.running = dict.fromkeys(Workspace.objects.values_list("engine_id", flat=True), "running")


def measure(passes: int) -> dict:
    """Timed passes (no query capture), then one more pass counted query by query."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from workspaces.tasks.reconcile import reconcile

    fixed = reconcile()  # warm: the engine's client, compiled queries, the page cache
    if any(fixed.values()):
        raise SystemExit(f"the site is not at rest: the pass fixed {fixed}")
    times = []
    for _ in range(passes):
        started = time.perf_counter()
        reconcile()
        times.append((time.perf_counter() - started) * 1000)
    with CaptureQueriesContext(connection) as queries:
        reconcile()
    return {
        "median_ms": round(statistics.median(times), 2),
        "p95_ms": round(percentile(times, 0.95), 2),
        "queries_per_pass": len(queries.captured_queries),
        "statements": [q["sql"][:60] for q in queries.captured_queries],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[0, 50, 200, 1000])
    parser.add_argument("--passes", type=int, default=20)
    parser.add_argument("--show-queries", action="store_true", help="list each pass's statements")
    args = parser.parse_args()
    if args.sizes[0] != 0:
        args.sizes.insert(0, 0)  # the baseline
    workdir = tempfile.mkdtemp(prefix="lattice-bench-reconcile-")
    os.environ.pop("DATABASE_URL", None)
    os.environ.update(
        DJANGO_SETTINGS_MODULE="portal.settings",
        LATTICE_SQLITE_PATH=f"{workdir}/bench.sqlite3",
        LATTICE_VAR_DIR=workdir,
        LATTICE_DISPLAY_SOCKET_DIR=f"{workdir}/displays",
        LATTICE_ENGINE_PREFIX="latticebench",
        LATTICE_ENGINE=f"{__name__}.{AtRestEngine.__qualname__}",
        REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
        SECRET_KEY="bench",
    )
    try:
        import django

        django.setup()
        from django.core.management import call_command

        from workspaces.lib.engine_access import backend
        from workspaces.models import Image, ImageKind

        call_command("migrate", verbosity=0, skip_checks=True)
        backend.cache_clear()
        if not isinstance(backend(), AtRestEngine):
            raise SystemExit(f"the engine is {type(backend()).__name__}, not the bench's")
        images = {
            "display": Image.objects.create(
                slug="bench-desktop",
                reference="lattice/desktop:bench",
                kind=ImageKind.DISPLAY,
                title="Desktop",
            ),
            "app": Image.objects.create(
                slug="bench-ide", reference="lattice/ide:bench", kind=ImageKind.APP, title="IDE"
            ),
        }
        started = time.perf_counter()
        rows = []
        for size in sorted(set(args.sizes)):
            grow_site(size, images)
            figures = measure(args.passes)
            statements = figures.pop("statements")
            row = {"workspaces_seats_jobs": size, **figures}
            if args.show_queries:
                row["statements"] = statements
            rows.append(row)
        baseline = rows[0]
        for row in rows:
            row["ratio_median_to_n0"] = round(row["median_ms"] / baseline["median_ms"], 2)
            row["extra_queries_over_n0"] = row["queries_per_pass"] - baseline["queries_per_pass"]
        largest = rows[-1]
        print(
            json.dumps(
                {
                    "passes_per_size": args.passes,
                    "sizes": rows,
                    f"ratio_n{largest['workspaces_seats_jobs']}_to_n0": largest["ratio_median_to_n0"],
                    "wall_clock_s": round(time.perf_counter() - started, 1),
                    "load_average_1m": round(os.getloadavg()[0], 2),
                },
                indent=2,
            )
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
