"""Bounded, seeded rounds of kill -9 while people launch, stop, save, broadcast, collect and back up."""

from __future__ import annotations

import time

import pytest

from tests.chaos.people import people
from tests.chaos.rounds import DESKTOP, RECOVERY, Chaos, wait_until
from tests.chaos.stack import VICTIMS
from workspaces.models import Workspace

pytestmark = [pytest.mark.chaos, pytest.mark.docker]


def test_rounds_of_kill_9(stack, chaos_rng, say, request):
    seed = request.config.getoption("chaos_seed")
    rounds = request.config.getoption("chaos_rounds")
    say(f"\nchaos seed {seed}, {rounds} rounds (again: make test-chaos ARGS='--chaos-seed {seed}')")
    teacher, members, loners, classroom = people(
        stack.web_url, "chaos-teacher", [f"chaos-pupil{n}" for n in (1, 2, 3)], ["ada", "grace", "alan"]
    )
    chaos = Chaos(stack, teacher, members, loners, classroom, chaos_rng)
    # Something running (with files and tokens) from the first round on.
    first = [person.call("POST", "/api/workspaces/", DESKTOP)[1]["id"] for person in loners[:2]]
    assert wait_until(
        lambda: Workspace.objects.filter(pk__in=first, state="running").count() == 2, time.monotonic() + 60
    ), list(Workspace.objects.values_list("state", "message"))

    # Every process in turn, in a seeded order: rounds as many as the processes kill each once.
    victims = [v for _ in range(-(-rounds // len(VICTIMS))) for v in chaos_rng.sample(VICTIMS, len(VICTIMS))]
    for round_no, victim in zip(range(1, rounds + 1), victims, strict=False):
        outcome = chaos.round(round_no, victim)
        recovered = f"{outcome.recovered_in:.1f} s" if outcome.recovered_in is not None else "NOT RECOVERED"
        say(
            f"seed {seed} round {round_no}/{rounds}: killed {outcome.victim} at +{outcome.killed_at:.1f}s, "
            f"back at +{outcome.back_at:.1f}s, recovered in {recovered}; {outcome.checked}"
        )
        for action in outcome.actions:
            say(f"    {action}")
        for note in outcome.notes:
            say(f"    note: {note}")
        assert not outcome.problems, (
            f"seed {seed} round {round_no} ({outcome.victim} killed), within {RECOVERY:.0f} s:\n  "
            + "\n  ".join(outcome.problems)
            + f"\n--- worker log ---\n{stack.log_tail('worker')}"
        )
