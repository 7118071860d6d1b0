"""A whole Lattice per test, whose processes the test kills; and a way to say what happened."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from tests.chaos.stack import Stack
from tests.conftest import _child_env
from tests.support import leftovers
from tests.support.services import ARTIFACTS


@pytest.fixture
def stack(transactional_db, tmp_path: Path, settings) -> Iterator[Stack]:
    """Every process `make run` starts, on the test database and the run's Redis; all gone afterwards.

    Display tokens last long here (15 min): one that still opens a stopped
    workspace at the round's end must be one that was never revoked, not one
    that merely expired.
    """
    from workspaces.lib.engine_access import backend
    from workspaces.services.catalog import sync_from_engine

    sync_from_engine()
    env = _child_env(LATTICE_DISPLAY_TOKEN_TTL="900", LATTICE_DISPLAY_TOKENS_PER_MINUTE="1000")
    lattice = Stack(env, tmp_path)
    try:
        lattice.start_all()
        yield lattice
    finally:
        lattice.stop_all()
        for workspace in backend().list_workspaces():
            backend().remove(workspace)
        leftovers.remove_everything_under(settings.LATTICE_ENGINE_PREFIX)
        # What was queued for this test's rows (gone with its database) must not reach the next one's worker.
        redis.Redis.from_url(lattice.redis.url).flushall()


@pytest.fixture
def chaos_rng(request) -> random.Random:
    return random.Random(request.config.getoption("chaos_seed"))


@pytest.fixture
def say(request) -> Callable[[str], None]:
    """Print a line as the test goes (not captured), and keep it in the artefacts' chaos.log."""
    capture = request.config.pluginmanager.getplugin("capturemanager")
    log = (ARTIFACTS / "chaos.log").open("a")

    def say(line: str) -> None:
        log.write(line + "\n")
        log.flush()
        with capture.global_and_fixture_disabled():
            print(line, flush=True)

    yield say
    log.close()
