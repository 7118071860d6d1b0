"""Names and specs: pure functions, no engine needed."""

from __future__ import annotations

import re

import pytest

from workspaces.engine import ContainerSpec, Limits, WorkspaceSpec, names
from workspaces.engine.errors import EngineError, InvalidSpecError

DOCKER_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
USERNAMES = [
    "alice",
    "Alice",
    "ALICE",
    "a.b",
    "a_b",
    "a-b",
    "a+b",
    "a@b",
    "a_2eb",
    "_",
    "-",
    "@.+-_",
    "élodie",
    "Élodie",
    "李雷",
    "x" * 150,
    "x" * 149 + "y",
    "é" * 150,
    "é" * 149 + "e",
]


def test_escaped_owner_names_are_valid_docker_names():
    for username in USERNAMES:
        volume = names.legacy_data_volume("lattice", username)
        assert DOCKER_NAME.match(volume), volume
        assert len(volume) < 200, volume


def test_data_volumes_are_named_by_user_id_apart_from_every_legacy_name():
    assert names.data_volume("lattice", 5) == "lattice-data-u-5"
    assert DOCKER_NAME.match(names.data_volume("lattice", 10**12))
    # A username like "u-5" escapes to "u_2d5": an old volume never takes an id's name.
    legacy = {names.legacy_data_volume("lattice", u) for u in [*USERNAMES, "u-5", "u", "u5", "-5"]}
    assert names.data_volume("lattice", 5) not in legacy
    for bad in (0, -1, "5", True, None):
        with pytest.raises(ValueError):
            names.data_volume("lattice", bad)


def test_escaping_never_maps_two_usernames_to_one_name():
    escaped = [names.escape(u) for u in USERNAMES]
    assert len(set(escaped)) == len(USERNAMES)


def test_escaping_keeps_plain_names_readable():
    assert names.legacy_data_volume("lattice", "alice") == "lattice-data-alice"
    assert names.escape("Bob") == "_42ob"
    assert names.escape("a.b@x") == "a_2eb_40x"


def test_workspace_objects_have_deterministic_prefixed_names():
    assert names.network("lattice", "42") == "lattice-ws42"
    assert names.x11_volume("lattice", "42") == "lattice-ws42-x11"
    assert names.container("lattice", "42", "ide") == "lattice-ws42-ide"


def test_workspace_and_container_names_cannot_collide():
    # Without escaping, workspace "1-ide" + container "x" and workspace "1" +
    # container "ide-x" would share a name.
    assert names.container("p", "1-ide", "x") != names.container("p", "1", "ide-x")


def test_prefix_must_be_plain():
    for bad in ("", "Lattice", "lat-tice", "a" * 33, "lattice/x"):
        with pytest.raises(ValueError):
            names.check_prefix(bad)
    assert names.check_prefix("latticetest") == "latticetest"


def display(image: str = "lattice/desktop:latest") -> ContainerSpec:
    return ContainerSpec("display", image, "display")


def test_specs_reject_what_can_never_start():
    with pytest.raises(InvalidSpecError):
        ContainerSpec("Bad Name", "img")
    with pytest.raises(InvalidSpecError):
        ContainerSpec("ide", "img", role="browser")
    with pytest.raises(InvalidSpecError):
        WorkspaceSpec("1", "alice", display(), (ContainerSpec("display", "img"),), owner_id=1)
    with pytest.raises(InvalidSpecError):
        WorkspaceSpec("1", "alice", ContainerSpec("ide", "img"), owner_id=1)
    with pytest.raises(InvalidSpecError):
        WorkspaceSpec("1", "alice", display(), geometry="big", owner_id=1)
    with pytest.raises(InvalidSpecError):
        WorkspaceSpec("1", "alice", display(), vnc_password="a\nb", owner_id=1)
    with pytest.raises(InvalidSpecError, match="owner's id"):
        WorkspaceSpec("1", "alice", display())  # no id: no data volume to name
    with pytest.raises(InvalidSpecError):
        Limits(mem_limit="lots")


def test_invalid_spec_is_an_engine_error_so_tasks_report_it():
    assert issubclass(InvalidSpecError, EngineError)
    assert issubclass(InvalidSpecError, ValueError)


def test_specs_are_frozen_and_hashable():
    spec = WorkspaceSpec(42, "alice", display(), [ContainerSpec("ide", "img", env={"A": "1"})], owner_id=5)
    assert spec.workspace_id == "42"
    assert isinstance(spec.apps, tuple)
    with pytest.raises(TypeError):
        spec.apps[0].env["A"] = "2"  # type: ignore[index]
    assert hash(spec) == hash(
        WorkspaceSpec("42", "alice", display(), (ContainerSpec("ide", "img", env={"A": "1"}),), owner_id=5)
    )
