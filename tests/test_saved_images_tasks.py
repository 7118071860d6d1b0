"""The commit task and the reconcile of stuck saves, with a fake engine and eager calls."""

from __future__ import annotations

import contextlib
import threading
from datetime import timedelta

import pytest
from billiard.exceptions import SoftTimeLimitExceeded
from django.db import connection
from django.utils import timezone

from tests.support.saved_images_fakes import MiB, make_saved_image, use_fake_engine
from workspaces import tasks
from workspaces.engine.base import ContainerNotFound
from workspaces.models import Image, Workspace
from workspaces.services import saved_images

pytestmark = pytest.mark.django_db


@pytest.fixture
def engine(settings):
    return use_fake_engine(settings)


@pytest.fixture
def events(monkeypatch):
    sent: list[tuple[int, dict]] = []
    monkeypatch.setattr(saved_images, "publish", lambda user_id, event: sent.append((user_id, event)))
    return sent


@pytest.fixture
def workspace(owner):
    desktop = Image.objects.create(
        slug="desktop", reference="lattice/desktop:latest", kind="display", title="Desktop"
    )
    ide = Image.objects.create(slug="ide", reference="lattice/ide:latest", kind="app", title="IDE")
    ws = Workspace.objects.create(owner=owner, display=desktop, state="running")
    ws.apps.set([ide])
    return ws


@pytest.fixture
def saving_image(workspace):
    return saved_images.save(workspace, "ide", "my-ide", "with plugins")


def test_a_save_ends_ready_with_sizes_sorted_changes_and_the_parents_title(
    engine, events, saving_image, workspace
):
    # An install changed hundreds of deep files: the user's own new file is still listed.
    engine.changes = [{"path": f"/usr/lib/python3/x/y/f{i}.py", "kind": "added"} for i in range(800)]
    engine.changes += [{"path": "/home/user/notes.txt", "kind": "added"}]
    engine.changes += [{"path": "/etc/hosts", "kind": "changed"}]
    tasks.commit_container(saving_image.pk)

    image = Image.objects.get(pk=saving_image.pk)
    assert (image.state, image.message) == ("ready", "Ready")
    assert (image.size, image.added_size) == (300 * MiB, 100 * MiB)
    assert image.changes["total"] == 802
    assert image.changes["sample"][0] == {"path": "/home/user/notes.txt", "kind": "added"}
    assert len(image.changes["sample"]) == saved_images.SAMPLE_SIZE
    assert image.changes["summary"]["/etc"] == {"added": 0, "changed": 1, "deleted": 0}
    (_, engine_id, container, reference, labels) = engine.called("commit")[0]
    assert (engine_id, container, reference) == (workspace.engine_id, "ide", image.reference)
    assert labels["lattice.title"] == "my-ide (v1)" and labels["lattice.parent-title"] == "IDE"
    assert labels["lattice.parent"] == "lattice/ide:latest" and labels["lattice.kind"] == "app"
    assert events[-1][1]["state"] == "ready" and events[-1][0] == image.owner_id


@pytest.mark.parametrize(
    ("method", "error", "message"),
    [
        ("commit", ContainerNotFound("The workspace has no container 'ide'."), "no container 'ide'"),
        ("diff", RuntimeError("socket closed"), "failed unexpectedly (RuntimeError: socket closed)"),
        ("image_size", KeyError("Size"), "failed unexpectedly (KeyError: 'Size')"),
        ("commit", SoftTimeLimitExceeded(), "took longer than 15 minutes"),
    ],
)
def test_any_failure_marks_the_save_failed_and_tells_the_owner(
    engine, events, saving_image, method, error, message
):
    engine.fail[method] = error
    tasks.commit_container(saving_image.pk)
    image = Image.objects.get(pk=saving_image.pk)
    assert image.state == "failed"
    assert message in image.message
    assert events[-1][1]["state"] == "failed" and message in events[-1][1]["message"]


def test_a_database_error_at_the_end_still_fails_the_save(engine, events, saving_image, monkeypatch):
    from django.db import DatabaseError

    def broken(changes):
        raise DatabaseError("disk I/O error")

    monkeypatch.setattr(saved_images, "changes_record", broken)
    tasks.commit_container(saving_image.pk)
    image = Image.objects.get(pk=saving_image.pk)
    assert image.state == "failed" and "DatabaseError: disk I/O error" in image.message


def test_a_deleted_source_workspace_fails_the_save_with_a_reason(engine, events, saving_image, workspace):
    workspace.delete()
    tasks.commit_container(saving_image.pk)
    image = Image.objects.get(pk=saving_image.pk)
    assert image.state == "failed"
    assert image.message == "The workspace it was saved from was deleted before the save began."
    assert not engine.called("commit")
    assert events[-1][1]["state"] == "failed"


def test_a_save_given_up_during_the_commit_stays_failed_and_leaves_no_tag(engine, events, saving_image):
    engine.during_commit = lambda: saved_images.fail(saving_image.pk, "given up")
    tasks.commit_container(saving_image.pk)
    image = Image.objects.get(pk=saving_image.pk)
    assert (image.state, image.message) == ("failed", "given up")
    assert engine.called("remove_image") == [("remove_image", image.reference)]


def test_a_save_that_is_not_saving_any_more_is_left_alone(engine, events, saving_image):
    Image.objects.filter(pk=saving_image.pk).update(state="failed", message="earlier")
    tasks.commit_container(saving_image.pk)
    assert Image.objects.get(pk=saving_image.pk).message == "earlier"
    assert engine.calls == []


def _age(image: Image, seconds: float) -> None:
    Image.objects.filter(pk=image.pk).update(created=timezone.now() - timedelta(seconds=seconds))


def test_stale_saves_are_failed_and_recent_ones_kept(events, owner, workspace):
    old = saved_images.save(workspace, "ide", "old")
    recent = saved_images.save(workspace, "display", "recent")
    _age(old, 3600)
    ready = make_saved_image(owner, "ready")
    _age(ready, 3600)

    assert saved_images.fail_stale_saves(1800) == 1
    assert Image.objects.get(pk=old.pk).state == "failed"
    assert "did not finish within 30 minutes" in Image.objects.get(pk=old.pk).message
    assert Image.objects.get(pk=recent.pk).state == "saving"
    assert Image.objects.get(pk=ready.pk).state == "ready"
    assert [e["id"] for _, e in events] == [old.pk]
    assert saved_images.fail_stale_saves(1800) == 0


def test_reconcile_fails_stale_saves(engine, events, saving_image):
    _age(saving_image, saved_images.STALE_SAVE_SECONDS + 60)
    assert tasks.reconcile()["stale_saves"] == 1
    assert Image.objects.get(pk=saving_image.pk).state == "failed"


@pytest.mark.django_db(transaction=True)
def test_two_saves_at_once_cannot_both_pass_the_count_quota(owner, workspace, monkeypatch):
    owner.saved_images_max_count = 1
    owner.save()
    checked = threading.Barrier(2)
    real_check = saved_images.check_quota

    def slow_check(user):
        real_check(user)
        # Both saves wait here, past the check: without a lock both would create a row.
        with contextlib.suppress(threading.BrokenBarrierError):
            checked.wait(timeout=1)

    monkeypatch.setattr(saved_images, "check_quota", slow_check)
    # No commit may run meanwhile: in a whole-suite run a real worker is up,
    # and a save it failed at once would no longer count against the quota.
    monkeypatch.setattr(tasks.commit_container, "delay", lambda image_id: None)
    outcomes: list[object] = []

    def save(container, name):
        try:
            outcomes.append(saved_images.save(Workspace.objects.get(pk=workspace.pk), container, name))
        except Exception as exc:
            outcomes.append(exc)
        finally:
            connection.close()

    threads = [
        threading.Thread(target=save, args=("ide", "one")),
        threading.Thread(target=save, args=("display", "two")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(type(o).__name__ for o in outcomes) == ["Image", "QuotaExceeded"], outcomes
    assert Image.objects.filter(owner=owner).count() == 1
