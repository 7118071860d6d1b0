"""Broadcast one environment to a class of 30 demo students and time it.

Prints the time until every student's display answers with a frame (through
the display proxy, as the browser would), the median per student, and the peak
memory of the engine's containers, beside a baseline measured in the same run:
one workspace started alone.

    .venv/bin/python bench/broadcast.py [--students 30] [--apps ide]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import threading
import time

from harness import ORIGIN, lattice

from workspaces.rfb import RFBClient


def engine_memory_mib(prefix: str) -> float:
    """The summed memory use of the benchmark's containers, from `docker stats`."""
    out = subprocess.run(
        ["docker", "stats", "--no-stream", "--format", "{{.Name}} {{.MemUsage}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    total = 0.0
    units = {"B": 1 / 1024**2, "KiB": 1 / 1024, "MiB": 1, "GiB": 1024}
    for line in out.splitlines():
        name, usage = line.split(" ", 1)
        if not name.startswith(prefix):
            continue
        value = usage.split("/")[0].strip()
        number = value.rstrip("KMGiB")
        total += float(number) * units[value[len(number) :]]
    return total


class MemorySampler(threading.Thread):
    def __init__(self, prefix: str):
        super().__init__(daemon=True)
        self.prefix, self.peak, self.running = prefix, 0.0, True

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, engine_memory_mib(self.prefix))


def first_frame(client, classroom_id: int, username: str) -> None:
    grant = client.post(
        f"/api/classrooms/{classroom_id}/students/{username}/display-token/", {"mode": "view"}, format="json"
    ).json()
    with RFBClient(grant["url"], grant["password"], origin=ORIGIN) as rfb:
        rfb.request_frame()
        rfb.read_update()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--students", type=int, default=30)
    parser.add_argument("--apps", nargs="*", default=[])
    args = parser.parse_args()
    with lattice():
        from rest_framework.test import APIClient

        from workspaces.models import Seat, User

        teacher = User.objects.create_user("bench-teacher", password="x", role="teacher")
        names = [f"bench-student{n}" for n in range(1, args.students + 1)]
        for name in names:
            User.objects.create_user(name, password="x")
        client = APIClient(HTTP_ORIGIN=ORIGIN)
        client.force_authenticate(teacher)
        classroom = client.post(
            "/api/classrooms/", {"name": "Bench", "students": names}, format="json"
        ).json()

        # Baseline: one workspace, alone, to its first frame.
        alone = User.objects.create_user("bench-alone", password="x")
        solo = APIClient(HTTP_ORIGIN=ORIGIN)
        solo.force_authenticate(alone)
        started = time.perf_counter()
        ws = solo.post("/api/workspaces/", {"display": "desktop", "apps": args.apps}, format="json").json()[
            "id"
        ]
        while solo.get(f"/api/workspaces/{ws}/").json()["state"] != "running":
            time.sleep(0.02)
        grant = solo.post(f"/api/workspaces/{ws}/display-token/", {"mode": "view"}, format="json").json()
        with RFBClient(grant["url"], grant["password"], origin=ORIGIN) as rfb:
            rfb.request_frame()
            rfb.read_update()
        baseline = time.perf_counter() - started
        solo.delete(f"/api/workspaces/{ws}/")

        sampler = MemorySampler("latticebench-")
        sampler.start()
        started = time.perf_counter()
        broadcast = client.post(
            f"/api/classrooms/{classroom['id']}/broadcasts/",
            {"display": "desktop", "apps": args.apps},
            format="json",
        ).json()
        ready: dict[str, float] = {}
        pending = set(names)
        while pending:
            seats = Seat.objects.filter(broadcast_id=broadcast["id"]).select_related("student")
            for seat in seats:
                name = seat.student.username
                if name in pending and seat.state == "running":
                    first_frame(client, classroom["id"], name)
                    ready[name] = time.perf_counter() - started
                    pending.discard(name)
                elif name in pending and seat.state == "failed":
                    raise SystemExit(f"{name} failed: {seat.message}")
            time.sleep(0.05)
        total = time.perf_counter() - started
        time.sleep(2)  # let the memory settle into its steady state
        sampler.running = False
        sampler.join()
        per_student = sorted(ready.values())
        print(
            json.dumps(
                {
                    "students": args.students,
                    "apps": args.apps,
                    "all_displays_answering_s": round(total, 2),
                    "median_per_student_s": round(statistics.median(per_student), 2),
                    "first_student_s": round(per_student[0], 2),
                    "one_workspace_alone_s": round(baseline, 2),
                    "ratio_total_to_one_alone": round(total / baseline, 1),
                    "peak_container_memory_mib": round(sampler.peak),
                    "peak_memory_per_student_mib": round(sampler.peak / args.students, 1),
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
