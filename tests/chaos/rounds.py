"""Chaos rounds: people act through the API while one of Lattice's processes is killed -9.

A round writes files into what runs and asks display tokens for it, then
fires a few actions (launch, stop, start, delete, save an image, broadcast
to the class or stop it, collect, back up) at random moments of its first
4 s, while a victim is killed at a random moment 0.2-5 s in and started
again a little later. Within RECOVERY seconds of the victim being back,
everything must have settled (checks.transient, checks.orphans); then no
file may have changed and no token of a stopped workspace may open it.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.chaos.checks import Files, Grants, orphans, transient
from tests.chaos.people import Person
from tests.chaos.stack import VICTIMS, Stack
from workspaces.models import ACTIVE_STATES, Workspace, WorkspaceState

# The promise: whole again within 60 s of the killed process being back.
RECOVERY = 60.0
# Launch twice as likely as the rest: the others need something launched.
ACTIONS = ("launch", "launch", "stop", "start", "delete", "save", "broadcast", "collect", "backup")
DESKTOP = {"display": "desktop", "apps": []}
# How Celery's worker exits when Redis dies under it holding unacknowledged
# messages (kombu's restore_unacked finds no connection): a known crash that
# its supervisor mends by starting it again.
KOMBU_EXIT = "'NoneType' object has no attribute 'hostname'"


@dataclass
class Outcome:
    actions: list[str]
    victim: str
    killed_at: float  # seconds into the round
    back_at: float
    recovered_in: float | None  # seconds after back_at; None: not within RECOVERY
    problems: list[str] = field(default_factory=list)
    checked: str = ""  # how much the file and token checks covered so far
    notes: list[str] = field(default_factory=list)  # expected crashes, restarted as a supervisor does


class Chaos:
    def __init__(
        self,
        stack: Stack,
        teacher: Person,
        members: list[Person],
        loners: list[Person],
        classroom: int,
        rng: random.Random,
    ):
        self.stack = stack
        self.teacher = teacher
        self.members = members
        self.loners = loners
        self.classroom = classroom
        self.rng = rng
        self.files = Files()
        self.grants = Grants(origin=stack.web_url)
        self.person = {p.user.pk: p for p in (teacher, *members, *loners)}
        self.saves = 0

    # -- before the kill: what users have in their workspaces ----------------------

    def prepare(self, round_no: int) -> None:
        """Files into every running workspace's /data, and a display token for each."""
        for ws in Workspace.objects.visible().filter(state=WorkspaceState.RUNNING):
            self.files.write(ws, f"r{round_no}-w{ws.pk}.bin", self.rng.randrange(1, 32 * 1024))
            status, grant = self.person[ws.owner_id].call(
                "POST", f"/api/workspaces/{ws.pk}/display-token/", {"mode": "control"}
            )
            if status == 200:
                self.grants.add(ws.pk, grant)

    # -- the actions -------------------------------------------------------------------

    def _workspaces(self, *states: str) -> list[Workspace]:
        owners = [p.user.pk for p in self.loners]
        return list(Workspace.objects.visible().filter(owner__in=owners, state__in=states).order_by("pk"))

    def _idle_loners(self) -> list[Person]:
        busy = set(
            Workspace.objects.visible().filter(state__in=ACTIVE_STATES).values_list("owner_id", flat=True)
        )
        return [p for p in self.loners if p.user.pk not in busy]

    def act(self, action: str) -> str | None:
        """Do one action through the API as its user would; what was done and the answer (None: nothing to do it to)."""
        pick = self.rng.choice
        if action == "launch":
            idle = [
                p for p in self._idle_loners() if Workspace.objects.visible().filter(owner=p.user).count() < 2
            ]
            if not idle:
                return None
            who = pick(idle)
            return self._said(f"launch by {who.name}", who.call("POST", "/api/workspaces/", DESKTOP))
        if action in ("stop", "save"):
            running = self._workspaces(WorkspaceState.RUNNING)
            if not running:
                return None
            ws = pick(running)
            who = self.person[ws.owner_id]
            if action == "stop":
                return self._said(f"stop {ws.pk}", who.call("POST", f"/api/workspaces/{ws.pk}/stop/"))
            self.saves += 1
            body = {"name": f"chaos-{self.saves}"}
            answer = who.call("POST", f"/api/workspaces/{ws.pk}/containers/display/commit/", body)
            return self._said(f"save {ws.pk}", answer)
        if action == "start":
            idle = {p.user.pk for p in self._idle_loners()}
            stopped = [ws for ws in self._workspaces(WorkspaceState.STOPPED) if ws.owner_id in idle]
            if not stopped:
                return None
            ws = pick(stopped)
            return self._said(
                f"start {ws.pk}", self.person[ws.owner_id].call("POST", f"/api/workspaces/{ws.pk}/start/")
            )
        if action == "delete":
            settled = self._workspaces(WorkspaceState.RUNNING, WorkspaceState.STOPPED, WorkspaceState.FAILED)
            if not settled:
                return None
            ws = pick(settled)
            return self._said(
                f"delete {ws.pk}", self.person[ws.owner_id].call("DELETE", f"/api/workspaces/{ws.pk}/")
            )
        if action == "broadcast":
            members = [p.user.pk for p in self.members]
            if Workspace.objects.visible().filter(owner__in=members, state__in=ACTIVE_STATES).exists():
                return self._said(
                    "stop class", self.teacher.call("POST", f"/api/classrooms/{self.classroom}/stop/")
                )
            answer = self.teacher.call("POST", f"/api/classrooms/{self.classroom}/broadcasts/", DESKTOP)
            return self._said(f"broadcast to {len(self.members)}", answer)
        if action == "collect":
            return self._said(
                "collect", self.teacher.call("POST", f"/api/classrooms/{self.classroom}/collect/")
            )
        if action == "backup":
            who = pick(self.loners)
            return self._said(f"backup of {who.name}", who.call("POST", "/api/backups/"))
        raise ValueError(action)

    @staticmethod
    def _said(what: str, answer: tuple[int | None, dict]) -> str:
        status, _ = answer
        return f"{what} -> {status or 'no answer'}"

    # -- one round -------------------------------------------------------------------

    def round(self, round_no: int, victim: str | None = None) -> Outcome:
        rng = self.rng
        victim = victim or rng.choice(VICTIMS)
        self.prepare(round_no)
        moments = sorted(rng.uniform(0, 4.0) for _ in range(rng.randint(2, 4)))
        kill_offset = rng.uniform(0.2, 5.0)
        down_for = rng.uniform(0.5, 3.0)

        start = time.monotonic()
        killed: list[float] = []
        killer = threading.Timer(kill_offset, lambda: killed.append(self.stack.kill(victim)))
        killer.start()
        done = []
        for moment in moments:
            time.sleep(max(0.0, start + moment - time.monotonic()))
            # The first of a random order that has something to act on (broadcast, collect, backup always do).
            did = next(filter(None, (self.act(action) for action in rng.sample(ACTIONS, len(ACTIONS)))))
            done.append(f"+{time.monotonic() - start:.1f}s {did}")
        killer.join()
        time.sleep(max(0.0, killed[0] + down_for - time.monotonic()))
        back = self.stack.start(victim)
        crashes: list[str] = []

        def settled() -> bool:
            crashes.extend(self.stack.restart_crashed())
            return not (transient() or orphans())

        recovered_in = wait_until(settled, back + RECOVERY)
        outcome = Outcome(done, victim, killed[0] - start, back - start, recovered_in and recovered_in - back)
        for crash in crashes:
            if victim == "redis" and crash.startswith("worker exited") and KOMBU_EXIT in crash:
                outcome.notes.append(
                    "the worker exited with Redis (kombu's restore_unacked) and was restarted"
                )
            else:
                outcome.problems.append(crash)
        outcome.problems += self.stack.exited()
        if recovered_in is None:
            outcome.problems += [
                f"not settled {RECOVERY:.0f} s after {victim} was back:",
                *transient(),
                *orphans(),
            ]
        else:
            outcome.problems += self.files.changed() + self.grants.opening_stopped()
            outcome.checked = (
                f"{len(self.files.written)} files unchanged, "
                f"{self.grants.tried} tokens of stopped workspaces refused"
            )
        return outcome


def wait_until(condition: Callable[[], bool], deadline: float, every: float = 0.5) -> float | None:
    """The moment (monotonic) ``condition`` first held; None if not by ``deadline``."""
    while True:
        if condition():
            return time.monotonic()
        if time.monotonic() > deadline:
            return None
        time.sleep(every)
