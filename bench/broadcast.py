"""Broadcast one environment to a class of 30 demo students and time it.

Prints the time until every student's display answers with a frame (through
the display proxy, as the browser would), the median per student, and the peak
memory of the engine's containers, beside a baseline measured in the same run:
one workspace started alone.

Each student has a thread of their own that opens their display the moment
their seat is running, so one slow student never delays another's figure.
Memory comes from the engine's stats stream (one per container, about one
sample a second each), summed by a background thread.

    .venv/bin/python bench/broadcast.py [--students 30] [--apps ide]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import threading
import time

from harness import ORIGIN, lattice

MIB = 1024**2


def memory_bytes(stats: dict) -> int:
    """Memory in use as `docker stats` counts it: usage less the reclaimable page cache."""
    memory = stats.get("memory_stats") or {}
    usage = memory.get("usage", 0)
    detail = memory.get("stats") or {}
    cache = detail.get("inactive_file", detail.get("total_inactive_file", detail.get("cache", 0)))
    return max(usage - cache, 0)


class MemorySampler(threading.Thread):
    """The summed memory of the engine's containers under a prefix, and its peak.

    A stats stream per container, opened as containers appear: reading a
    stream costs nothing between samples, where one `docker stats
    --no-stream` call takes seconds for thirty containers.
    """

    def __init__(self, api, prefix: str, every: float = 0.25):
        super().__init__(daemon=True)
        self.api, self.prefix, self.every = api, prefix, every
        self.latest: dict[str, int] = {}
        self.watched: set[str] = set()
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.peak = 0
        self.samples = 0

    def _follow(self, container_id: str) -> None:
        # The stream ends (or fails) when its container goes: it counts no more.
        with contextlib.suppress(Exception):
            for stats in self.api.stats(container_id, decode=True, stream=True):
                if self.stopping.is_set():
                    break
                with self.lock:
                    self.latest[container_id] = memory_bytes(stats)
        with self.lock:
            self.latest.pop(container_id, None)

    def run(self) -> None:
        filters = {"label": [f"lattice.prefix={self.prefix}"], "status": "running"}
        while not self.stopping.is_set():
            for row in self.api.containers(filters=filters):
                if row["Id"] not in self.watched:
                    self.watched.add(row["Id"])
                    threading.Thread(target=self._follow, args=(row["Id"],), daemon=True).start()
            with self.lock:
                total = sum(self.latest.values())
            self.peak = max(self.peak, total)
            self.samples += 1
            self.stopping.wait(self.every)

    def stop(self) -> None:
        self.stopping.set()
        self.join()


def first_frame(client, url: str, deadline: float) -> None:
    """A view token, then one framebuffer update through the proxy; retried until the deadline."""
    from workspaces.display.rfb import RFBClient

    while True:
        try:
            grant = client.post(url, {"mode": "view"}, format="json").json()
            with RFBClient(grant["url"], grant["password"], origin=ORIGIN) as rfb:
                rfb.request_frame()
                rfb.read_update()
                return
        except (OSError, ConnectionError, KeyError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class Student(threading.Thread):
    """Waits for its seat to run, then times its first frame."""

    def __init__(self, teacher, classroom_id: int, username: str, started: float, timeout: float):
        super().__init__(daemon=True)
        self.teacher, self.username, self.started, self.timeout = teacher, username, started, timeout
        self.url = f"/api/classrooms/{classroom_id}/students/{username}/display-token/"
        self.running = threading.Event()
        self.seconds: float | None = None
        self.error = ""

    def run(self) -> None:
        from django.db import connections
        from rest_framework.test import APIClient

        try:
            if not self.running.wait(self.timeout):
                self.error = "never running"
                return
            client = APIClient(HTTP_ORIGIN=ORIGIN)
            client.force_authenticate(self.teacher)
            first_frame(client, self.url, time.monotonic() + 60)
            self.seconds = time.perf_counter() - self.started
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            connections.close_all()


def watch_seats(broadcast_id: int, students: dict[str, Student], timeout: float) -> None:
    """One reader of the seats for everyone (not thirty pollers on the database)."""
    from workspaces.models import Seat

    deadline = time.monotonic() + timeout
    waiting = dict(students)
    while waiting and time.monotonic() < deadline:
        for name, state, message in Seat.objects.filter(
            broadcast_id=broadcast_id, student__username__in=list(waiting)
        ).values_list("student__username", "state", "message"):
            if state == "running":
                waiting.pop(name).running.set()
            elif state in ("failed", "stopped"):
                student = waiting.pop(name)
                student.error = f"{state}: {message}"
                student.running.set()
        time.sleep(0.05)


def baseline(apps: list[str]) -> float:
    """One workspace, alone, from the launch call to its first frame."""
    from rest_framework.test import APIClient

    from workspaces.models import User, Workspace

    alone = User.objects.create_user("bench-alone", password="x")
    solo = APIClient(HTTP_ORIGIN=ORIGIN)
    solo.force_authenticate(alone)
    started = time.perf_counter()
    ws = solo.post("/api/workspaces/", {"display": "desktop", "apps": apps}, format="json").json()["id"]
    while solo.get(f"/api/workspaces/{ws}/").json()["state"] not in ("running", "failed"):
        time.sleep(0.02)
    first_frame(solo, f"/api/workspaces/{ws}/display-token/", time.monotonic() + 60)
    seconds = time.perf_counter() - started
    solo.delete(f"/api/workspaces/{ws}/")
    while Workspace.objects.filter(pk=ws).exists():  # gone before the class's memory is measured
        time.sleep(0.05)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--students", type=int, default=30)
    parser.add_argument("--apps", nargs="*", default=[])
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for the whole class")
    args = parser.parse_args()
    with lattice():
        from django.conf import settings
        from rest_framework.test import APIClient

        from workspaces.lib.engine_access import backend
        from workspaces.models import User

        teacher = User.objects.create_user("bench-teacher", password="x", role="teacher")
        names = [f"bench-student{n}" for n in range(1, args.students + 1)]
        for name in names:
            User.objects.create_user(name, password="x")
        client = APIClient(HTTP_ORIGIN=ORIGIN)
        client.force_authenticate(teacher)
        classroom = client.post("/api/classrooms/", {"name": "Bench"}, format="json").json()
        # Students are members by their own act: each joins with the class's code, as in a lesson.
        for name in names:
            pupil = APIClient(HTTP_ORIGIN=ORIGIN)
            pupil.force_authenticate(User.objects.get(username=name))
            joined = pupil.post("/api/classrooms/join/", {"code": classroom["join_code"]}, format="json")
            if joined.status_code != 200:
                raise SystemExit(f"{name} could not join: {joined.status_code} {joined.json()}")

        alone = baseline(args.apps)

        sampler = MemorySampler(backend().api, settings.LATTICE_ENGINE_PREFIX)
        sampler.start()
        started = time.perf_counter()
        students = {name: Student(teacher, classroom["id"], name, started, args.timeout) for name in names}
        for student in students.values():
            student.start()
        response = client.post(
            f"/api/classrooms/{classroom['id']}/broadcasts/",
            {"display": "desktop", "apps": args.apps},
            format="json",
        )
        if response.status_code != 202:
            raise SystemExit(f"the broadcast was refused: {response.status_code} {response.json()}")
        watch_seats(response.json()["id"], students, args.timeout)
        for student in students.values():
            student.join(args.timeout)
        total = time.perf_counter() - started
        time.sleep(2)  # the memory settles into its steady state
        sampler.stop()

        failed = {name: s.error for name, s in students.items() if s.seconds is None}
        if failed:
            raise SystemExit(f"{len(failed)} student(s) never showed a frame: {json.dumps(failed, indent=2)}")
        per_student = sorted(s.seconds for s in students.values())
        print(
            json.dumps(
                {
                    "students": args.students,
                    "apps": args.apps,
                    "concurrency": settings.LATTICE_BROADCAST_CONCURRENCY,
                    "all_displays_answering_s": round(per_student[-1], 2),
                    "median_per_student_s": round(statistics.median(per_student), 2),
                    "first_student_s": round(per_student[0], 2),
                    "one_workspace_alone_s": round(alone, 2),
                    "ratio_all_to_one_alone": round(per_student[-1] / alone, 1),
                    "peak_container_memory_mib": round(sampler.peak / MIB),
                    "peak_memory_per_student_mib": round(sampler.peak / MIB / args.students, 1),
                    "memory_samples": sampler.samples,
                    "wall_clock_s": round(total, 2),
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
