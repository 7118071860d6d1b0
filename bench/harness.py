"""A private Lattice for benchmarks: its own Redis, database, worker and display proxy.

Reuses the test harness (tests/support/services.py) so a benchmark measures the same
processes the end-to-end tests exercise, without touching a running `make run`.
"""

from __future__ import annotations

import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import services  # noqa: E402  (starts a private redis-server)

ORIGIN = "http://bench.local"


@contextmanager
def lattice():
    """Yield a configured Django with a worker and a display proxy running."""
    workdir = tempfile.mkdtemp(prefix="lattice-bench-")
    os.environ.update(
        DJANGO_SETTINGS_MODULE="portal.settings",
        LATTICE_SQLITE_PATH=f"{workdir}/bench.sqlite3",
        LATTICE_ENGINE_PREFIX="latticebench",
        ALLOWED_HOSTS="bench.local,testserver",
    )
    proxy_port = services.free_port()
    os.environ["LATTICE_DISPLAY_PROXY_URL"] = f"ws://127.0.0.1:{proxy_port}/"
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, skip_checks=True)
    call_command("sync_images", skip_checks=True, verbosity=0)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    worker = services.Process(
        "bench-worker",
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "portal",
            "worker",
            "--loglevel",
            "INFO",
            "--pool",
            "threads",
            "--concurrency",
            "4",
            "--without-gossip",
            "--without-mingle",
            "--hostname",
            "bench@%h",
        ],
        env,
    )
    proxy = services.Process(
        "bench-display-proxy",
        [
            sys.executable,
            "-m",
            "workspaces.display.proxy",
            "--listen",
            f"127.0.0.1:{proxy_port}",
            "--origins",
            ORIGIN,
        ],
        env,
    )
    try:
        worker.wait_for_log("ready", timeout=60)
        services.wait_for_port(proxy_port)
        yield
    finally:
        from workspaces.lib.engine_access import backend

        for workspace_id in backend().list_workspaces():
            backend().remove(workspace_id)
        worker.stop()
        proxy.stop()
        # The benchmark's users and their files were made up for it: nothing of them stays.
        from tests.support.leftovers import remove_everything_under

        remove_everything_under("latticebench")
