"""What one pass of the disk watch costs: the worker's walk against the engine's measure.

Starts --workspaces display-only workspaces (one user each), writes
--megabytes into each container's home folder, then times, in the same run,
what the beat task calls, backend().container_disk_usage() (an inspect per
container, then a walk of its upper directory on this host), beside the
engine measuring the same containers one by one (docker's SizeRw: what the
watch asked for before) and the list without sizes (what the list itself
costs). Prints both passes, their ratio, and what each measured.

    .venv/bin/python bench/disk_usage.py [--workspaces 10] [--megabytes 20] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from harness import ORIGIN, lattice


def timed(call, runs: int) -> tuple[float, object]:
    seconds, result = [], None
    for _ in range(runs):
        started = time.perf_counter()
        result = call()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workspaces", type=int, default=10)
    parser.add_argument("--megabytes", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with lattice():
        from rest_framework.test import APIClient

        from workspaces.lib.engine_access import backend
        from workspaces.models import User, Workspace

        ids = []
        for n in range(args.workspaces):
            client = APIClient(HTTP_ORIGIN=ORIGIN)
            client.force_authenticate(User.objects.create_user(f"bench{n}", password="bench-password"))
            answer = client.post("/api/workspaces/", {"display": "desktop", "apps": []}, format="json")
            ids.append(answer.json()["id"])
        deadline = time.monotonic() + 60 + 10 * args.workspaces
        while Workspace.objects.filter(pk__in=ids, state="running").count() < len(ids):
            if time.monotonic() > deadline:
                raise SystemExit("the workspaces did not all start")
            time.sleep(0.2)
        fill = f'head -c {args.megabytes * 1024 * 1024} /dev/urandom > "$HOME/fill.bin"'
        for ws in Workspace.objects.filter(pk__in=ids):
            backend().exec(ws.engine_id, "display", ["sh", "-c", fill])

        engine = backend()
        walked, measured = timed(engine.container_disk_usage, args.runs)
        containers = [row["Id"] for row in engine._running_rows()]
        by_engine, sizes = timed(lambda: [engine._engine_written(c) for c in containers], args.runs)
        plain, _ = timed(lambda: engine.api.containers(filters=engine._filters()), args.runs)
    result = {
        "containers": len(measured),
        "walk_written_mb_median": round(statistics.median(m.written for m in measured) / 1024**2, 1),
        "walk_complete": all(m.complete for m in measured),
        "engine_written_mb_median": round(statistics.median(s or 0 for s in sizes) / 1024**2, 1),
        "walk_pass_median_s": round(walked, 3),
        "walk_per_container_s": round(walked / max(1, len(measured)), 4),
        "engine_pass_median_s": round(by_engine, 2),
        "engine_per_container_s": round(by_engine / max(1, len(containers)), 3),
        "engine_over_walk": round(by_engine / max(walked, 1e-6), 1),
        "list_without_sizes_s": round(plain, 3),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
