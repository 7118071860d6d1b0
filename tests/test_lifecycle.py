"""Workspace lifecycle rules and recovery, with a fake engine: claims, refusals, reconcile."""

from __future__ import annotations

import subprocess
from datetime import timedelta

import pytest
from django.utils import timezone

from tests.support.fakes import endpoint_state, use_engine
from workspaces import tasks
from workspaces.display import tokens as display_tokens
from workspaces.engine.docker_backend import DockerBackend
from workspaces.engine.errors import EngineUnavailable
from workspaces.engine.specs import ContainerState, Endpoint
from workspaces.lib.redis import redis_client
from workspaces.models import Image, Workspace
from workspaces.services import lifecycle

pytestmark = pytest.mark.django_db


class ScriptedEngine(DockerBackend):
    """The real backend with its engine calls answered from a script, never Docker."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.workspaces: dict[str, str] = {}
        self.calls: list[tuple[str, str]] = []
        self.fail: dict[str, BaseException] = {}

    def _do(self, name: str, workspace_id: str) -> None:
        self.calls.append((name, workspace_id))
        if name in self.fail:
            raise self.fail[name]

    def start(self, spec, progress=None, timeout=60):
        self._do("start", spec.workspace_id)
        self.workspaces[spec.workspace_id] = "running"
        return Endpoint(path=f"/sockets/{spec.workspace_id}/vnc.sock", container_id="c0ffee", server_pid=4242)

    def stop(self, workspace_id):
        self._do("stop", workspace_id)
        self.workspaces[workspace_id] = "stopped"

    def remove(self, workspace_id):
        self._do("remove", workspace_id)
        self.workspaces.pop(workspace_id, None)

    def containers(self, workspace_id):
        state = self.workspaces.get(workspace_id)
        return [ContainerState("display", "lattice/desktop:latest", state)] if state else []

    def list_workspaces(self):
        return dict(self.workspaces)


@pytest.fixture
def engine(settings):
    return use_engine(settings, ScriptedEngine)


@pytest.fixture
def desktop(db):
    return Image.objects.create(slug="desktop", reference="lattice/desktop:latest", kind="display", title="D")


def make(owner, desktop, state: str, **fields) -> Workspace:
    ws = lifecycle.create_workspace(owner, desktop, [])
    Workspace.objects.filter(pk=ws.pk).update(state=state, **fields)
    ws.refresh_from_db()
    return ws


# -- shared pieces ---------------------------------------------------------------------------


def test_one_redis_client_serves_the_process_per_url(settings):
    client = redis_client()
    assert redis_client() is client, "one client, one connection pool"
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    other = redis_client()
    assert other is not client and other.connection_pool.connection_kwargs["port"] == 1


# -- claims ---------------------------------------------------------------------------------


def test_a_stop_during_a_start_leaves_the_engine_to_the_start(
    owner, desktop, django_capture_on_commit_callbacks
):
    ws = make(owner, desktop, "starting")
    with django_capture_on_commit_callbacks() as queued:
        lifecycle.stop(ws)
    assert Workspace.objects.get(pk=ws.pk).state == "stopping"
    assert queued == []  # the start's own task carries it out when the engine call returns


@pytest.mark.parametrize("state", ["pending", "running", "failed"])
def test_a_stop_queues_the_engine_work(owner, desktop, state, django_capture_on_commit_callbacks):
    ws = make(owner, desktop, state)
    with django_capture_on_commit_callbacks() as queued:
        lifecycle.stop(ws)
    assert Workspace.objects.get(pk=ws.pk).state == "stopping"
    assert len(queued) == 1


@pytest.mark.parametrize("state", ["stopping", "stopped"])
def test_nothing_to_stop_is_a_conflict(owner, desktop, state):
    ws = make(owner, desktop, state)
    with pytest.raises(lifecycle.WrongState, match=f"The workspace is {state}"):
        lifecycle.stop(ws)


def test_delete_claims_once_in_any_state(owner, desktop, django_capture_on_commit_callbacks):
    ws = make(owner, desktop, "starting")
    with django_capture_on_commit_callbacks() as queued:
        lifecycle.delete(ws)
    assert queued == []
    with pytest.raises(lifecycle.WrongState, match="already being deleted"):
        lifecycle.delete(ws)
    other = make(owner, desktop, "stopped")
    with django_capture_on_commit_callbacks() as queued:
        lifecycle.delete(other)
    assert len(queued) == 1
    assert Workspace.objects.visible().filter(owner=owner).count() == 0


def test_a_disabled_image_does_not_start_again(owner, desktop):
    ws = make(owner, desktop, "stopped")
    Image.objects.filter(pk=desktop.pk).update(enabled=False)
    ws.refresh_from_db()
    with pytest.raises(lifecycle.NotAllowed, match="desktop is disabled by an administrator"):
        lifecycle.start(ws)
    assert Workspace.objects.get(pk=ws.pk).state == "stopped"


def test_a_token_issued_as_the_workspace_stops_is_taken_back(owner, desktop, monkeypatch):
    ws = make(
        owner,
        desktop,
        "running",
        engine_state=endpoint_state("/s/vnc.sock"),
    )
    issued = []
    real_issue = display_tokens.issue

    def issue_while_stopping(client, grant, ttl):
        token = real_issue(client, grant, ttl)
        issued.append(token)
        Workspace.objects.filter(pk=ws.pk).update(state="stopping")  # a stop lands right now
        return token

    monkeypatch.setattr(display_tokens, "issue", issue_while_stopping)
    with pytest.raises(lifecycle.WrongState, match="stopping"):
        lifecycle.issue_display_token(ws, "control")
    assert display_tokens.consume(redis_client(), issued[0]) is None


# -- tasks and their failures -----------------------------------------------------------------


def test_a_start_that_breaks_in_lattice_ends_failed_with_a_reason(owner, desktop, engine):
    engine.fail["start"] = KeyError("NetworkSettings")
    ws = make(owner, desktop, "pending")
    tasks.spawn_workspace(ws.pk)
    ws.refresh_from_db()
    assert ws.state == "failed"
    assert "error in Lattice (KeyError)" in ws.message


def test_an_engine_down_during_stop_leaves_a_failed_workspace_that_can_be_stopped_again(
    owner, desktop, engine
):
    ws = make(owner, desktop, "stopping")
    engine.fail["stop"] = EngineUnavailable("Stopping the workspace: cannot reach the container engine.")
    tasks.stop_workspace(ws.pk)
    ws.refresh_from_db()
    assert ws.state == "failed" and "cannot reach the container engine" in ws.message
    del engine.fail["stop"]
    lifecycle.stop(ws)
    tasks.stop_workspace(ws.pk)
    assert Workspace.objects.get(pk=ws.pk).state == "stopped"


def test_a_failed_delete_keeps_the_row_for_the_reconcile(owner, desktop, engine):
    ws = make(owner, desktop, "stopped")
    lifecycle.delete(ws)
    engine.fail["remove"] = EngineUnavailable("cannot reach the container engine")
    tasks.remove_workspace(ws.pk)
    assert Workspace.objects.get(pk=ws.pk).message.startswith("Could not delete yet")
    del engine.fail["remove"]
    tasks.remove_workspace(ws.pk)
    assert not Workspace.objects.filter(pk=ws.pk).exists()


def test_progress_after_a_stop_took_over_is_dropped(owner, desktop):
    ws = make(owner, desktop, "starting")
    Workspace.objects.filter(pk=ws.pk).update(state="stopping", message="Stopping")
    lifecycle.report(ws, 70, "Starting ide")
    assert Workspace.objects.get(pk=ws.pk).message == "Stopping"


# -- reconcile ---------------------------------------------------------------------------------


def long_ago(ws: Workspace) -> None:
    """Its lease lapsed: the task (or the message) on it died."""
    Workspace.objects.filter(pk=ws.pk).update(leased_until=timezone.now() - timedelta(seconds=1))


def test_reconcile_takes_up_work_whose_task_died(owner, desktop, engine, monkeypatch):
    queued: list[tuple[str, int]] = []
    for name in ("spawn_workspace", "stop_workspace", "remove_workspace"):
        monkeypatch.setattr(getattr(tasks, name), "delay", lambda pk, name=name: queued.append((name, pk)))
    pending = make(owner, desktop, "pending")
    starting = make(owner, desktop, "starting")
    stopping = make(owner, desktop, "stopping")
    deleting = make(owner, desktop, "stopped", deleting=True)
    fresh = make(owner, desktop, "starting")  # its lease holds: its task still runs
    for ws in (pending, starting, stopping, deleting):
        long_ago(ws)
    fixed = tasks.reconcile()
    # The start is handed back to the queue (one more recovery counted), not stopped.
    assert sorted(queued) == sorted(
        [
            ("spawn_workspace", pending.pk),
            ("spawn_workspace", starting.pk),
            ("stop_workspace", stopping.pk),
            ("remove_workspace", deleting.pk),
        ]
    )
    assert fixed["workspaces"] == 4
    taken_up = Workspace.objects.get(pk=starting.pk)
    assert (taken_up.state, taken_up.recoveries) == ("pending", 1)
    assert "worker had stopped" in taken_up.message
    assert Workspace.objects.get(pk=fresh.pk).state == "starting"
    # Sent once: every row's lease was renewed, conditionally, as it was sent.
    queued.clear()
    tasks.reconcile()
    assert queued == []


def test_a_start_whose_worker_died_is_taken_up_again_and_runs(owner, desktop, engine, monkeypatch):
    monkeypatch.setattr(tasks.spawn_workspace, "delay", tasks.spawn_workspace)
    ws = make(owner, desktop, "starting")
    tasks.spawn_workspace(ws.pk)  # its lease holds: another worker is on it
    assert Workspace.objects.get(pk=ws.pk).state == "starting"
    long_ago(ws)
    tasks.reconcile()
    ws.refresh_from_db()
    assert (ws.state, ws.recoveries) == ("running", 1)
    # The dead run, had it been only slow, can no longer settle the row: it holds generation 0.
    stale = Workspace.objects.get(pk=ws.pk)
    stale.recoveries = 0
    assert not lifecycle.settle(stale, "running", "failed", "late word of a dead run")
    assert Workspace.objects.get(pk=ws.pk).state == "running"


def test_a_start_interrupted_too_often_fails_with_the_reason(owner, desktop, engine, settings):
    ws = make(owner, desktop, "starting")
    Workspace.objects.filter(pk=ws.pk).update(recoveries=settings.LATTICE_MAX_RECOVERIES)
    long_ago(ws)
    tasks.reconcile()
    ws.refresh_from_db()
    assert ws.state == "failed" and "interrupted 4 times" in ws.message


def test_reconcile_fails_a_running_workspace_whose_display_died_and_says_so(owner, desktop, engine):
    ws = make(
        owner, desktop, "running", engine_state={"containers": [{"name": "display", "state": "running"}]}
    )
    engine.workspaces[ws.engine_id] = "stopped"
    token = display_tokens.issue(redis_client(), display_tokens.Grant(ws.pk, "/s", "view"), 60)
    assert tasks.reconcile()["failed"] == 1
    ws.refresh_from_db()
    assert ws.state == "failed" and "stopped unexpectedly" in ws.message
    assert ws.engine_state["containers"] == [
        {"name": "display", "image": "lattice/desktop:latest", "state": "stopped"}
    ]
    assert display_tokens.consume(redis_client(), token) is None


def test_reconcile_removes_what_the_engine_has_and_the_database_does_not(owner, desktop, engine):
    engine.workspaces["orphan1"] = "running"
    ws = make(owner, desktop, "running")
    engine.workspaces[ws.engine_id] = "running"
    assert tasks.reconcile()["orphans"] == 1
    assert ("remove", "orphan1") in engine.calls
    assert ("remove", ws.engine_id) not in engine.calls


# A pool of this test's own: its rules are the test's, installed and removed here; the site's are never touched.
EGRESS_POOL = "172.31.208.0/20"


class EgressEngine(ScriptedEngine):
    """The scripted engine with the real egress firewall (real iptables) on the test's pool."""

    def __init__(self, **kwargs) -> None:
        super().__init__(network_pool=EGRESS_POOL, **kwargs)


def test_reconcile_puts_back_egress_rules_that_went_while_apps_run(owner, desktop, settings):
    engine = use_engine(settings, EgressEngine)
    firewall = engine.egress
    ide = Image.objects.create(slug="ide", reference="lattice/ide:latest", kind="app", title="IDE")
    try:
        firewall.ensure()
        ws = make(owner, desktop, "running")
        ws.apps.add(ide)
        engine.workspaces[ws.engine_id] = "running"
        unchanged = tasks.reconcile()
        # A firewall reload (or a hand) takes a jump into our chain away while the IDE runs.
        jump = firewall.expected().jumps[0]
        deleted = subprocess.run(
            [firewall.binary(), "-w", *jump.replace("-A ", "-D ", 1).split()], capture_output=True, text=True
        )
        assert deleted.returncode == 0, deleted.stderr
        assert firewall.missing() == [jump]
        fixed = tasks.reconcile()
        assert firewall.missing() == []
        assert (unchanged["egress"], fixed["egress"]) == (0, 1)  # nothing changed: nothing done
    finally:
        firewall.remove()


def test_a_container_paused_by_a_save_counts_as_up():
    """A save as image pauses the container for its commit: a reconcile pass meanwhile must not fail it."""
    from workspaces.engine.docker_backend import DockerBackend
    from workspaces.engine.docker_common import LABEL_ROLE

    def row(role: str, state: str) -> dict:
        return {"Labels": {LABEL_ROLE: role}, "State": state}

    assert DockerBackend._workspace_state([row("display", "running"), row("app", "paused")]) == "running"
    assert DockerBackend._workspace_state([row("display", "running"), row("app", "exited")]) == "failed"
