"""What one pass of the disk watch costs: the engine measuring every running container.

Starts --workspaces display-only workspaces (one user each), writes
--megabytes into each container's home folder, then times what the beat task
calls, backend().container_disk_usage() (docker's list with sizes), beside
the same list without sizes (the baseline: what the list itself costs).

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

        from workspaces.engine_access import backend
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
        sized, measured = timed(engine.container_disk_usage, args.runs)
        plain, _ = timed(lambda: engine.api.containers(filters=engine._filters()), args.runs)
    result = {
        "containers": len(measured),
        "written_mb_median": round(statistics.median(m.written for m in measured) / 1024**2, 1),
        "pass_median_s": round(sized, 2),
        "per_container_s": round(sized / max(1, len(measured)), 3),
        "list_without_sizes_s": round(plain, 3),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
