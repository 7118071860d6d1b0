"""Recovery driven by the database: leases, and reconcile taking up what a dead worker left.

The end-to-end proof (a real worker killed mid-broadcast) is in the chaos
suite; these pin each piece down.
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from tests.support.saved_images_fakes import use_fake_engine
from workspaces import leases, tasks
from workspaces.models import Image, Job, Workspace
from workspaces.services import jobs, saved_images

pytestmark = pytest.mark.django_db


def lapse(model, pk: int) -> None:
    model.objects.filter(pk=pk).update(leased_until=timezone.now() - timedelta(seconds=1))


@pytest.fixture
def renewal(monkeypatch, settings):
    """Renewal as in a worker, with a short lease so a test sees it work."""
    settings.LATTICE_LEASE_SECONDS = 1.2
    monkeypatch.setattr(leases, "_renewal_enabled", True)


@pytest.mark.django_db(transaction=True)
def test_a_held_lease_is_renewed_while_the_work_runs_and_lapses_after(renewal, owner):
    job = Job.objects.create(owner=owner, kind="diagnostics", state="running")
    with jobs.renewing(job):
        time.sleep(3.0)  # two and a half leases: renewed every 0.3 s
        assert not Job.objects.filter(leases.lapsed(), pk=job.pk).exists()
    time.sleep(1.5)
    assert Job.objects.filter(leases.lapsed(), pk=job.pk).exists()


@pytest.mark.django_db(transaction=True)
def test_a_run_taken_for_dead_renews_nothing_once_the_job_was_handed_back(renewal, owner):
    job = Job.objects.create(owner=owner, kind="diagnostics", state="running")
    with jobs.renewing(job):
        Job.objects.filter(pk=job.pk).update(recoveries=1, leased_until=timezone.now())  # handed back
        time.sleep(1.0)
        assert Job.objects.filter(leases.lapsed(), pk=job.pk).exists()
    assert not jobs.finish(job, "done", "late word of a dead run")


def test_a_lease_is_let_go_after_its_longest_time(renewal, owner):
    beats = []
    with leases.Renewing(lambda: beats.append(1), "a hung call", at_most=0.5):
        time.sleep(2.0)
    assert 1 <= len(beats) <= 2


def test_outside_a_worker_nothing_renews_in_the_background(owner):
    with leases.Renewing(lambda: pytest.fail("renewed outside a worker"), "nothing") as held:
        assert held._thread is None


def test_a_job_whose_worker_died_is_sent_again_and_finishes(
    owner, monkeypatch, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False):
        job = jobs.queue_job(owner, "diagnostics", tasks.run_diagnostics.name)
    assert (job.task, job.task_kwargs) == ("workspaces.tasks.diagnostics.run_diagnostics", {})
    assert jobs.claim(job.pk) is not None  # a worker took it...
    assert jobs.claim(job.pk) is None  # ...and holds it: a second run leaves it alone
    lapse(Job, job.pk)  # ...and died
    sent = []
    monkeypatch.setattr(
        tasks.run_diagnostics,
        "delay",
        lambda **kwargs: sent.append(kwargs) or tasks.run_diagnostics(**kwargs),
    )

    assert jobs.recover_lapsed() == 1

    assert sent == [{"job_id": job.pk}]
    job.refresh_from_db()
    assert job.state in ("done", "failed") and job.recoveries == 1
    assert "Checking" not in job.message  # it ran to its end


def test_a_queued_job_whose_message_was_lost_is_sent_once_per_lapse(
    owner, monkeypatch, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False):
        job = jobs.queue_job(owner, "collect", tasks.collect_classroom.name, classroom_id=7)
    sent = []
    monkeypatch.setattr(tasks.collect_classroom, "delay", lambda **kwargs: sent.append(kwargs))
    assert jobs.recover_lapsed() == 0  # its message may still be on its way
    lapse(Job, job.pk)
    assert jobs.recover_lapsed() == 1
    assert jobs.recover_lapsed() == 0  # the lease was renewed as it was sent
    assert sent == [{"job_id": job.pk, "classroom_id": 7}]


def test_a_job_taken_up_too_often_fails_with_the_reason(owner, settings):
    job = Job.objects.create(
        owner=owner, kind="build", state="running", task="x", recoveries=settings.LATTICE_MAX_RECOVERIES
    )
    unknown = Job.objects.create(owner=owner, kind="old", state="queued", task="workspaces.tasks.gone")
    lapse(Job, job.pk)
    lapse(Job, unknown.pk)
    jobs.recover_lapsed()
    job.refresh_from_db()
    unknown.refresh_from_db()
    assert job.state == "failed" and "worker stopped 4 times" in job.message
    assert unknown.state == "failed" and "no longer does this kind of job" in unknown.message


def test_a_save_whose_worker_died_is_committed_again(settings, owner, monkeypatch):
    engine = use_fake_engine(settings)
    monkeypatch.setattr(tasks.commit_container, "delay", tasks.commit_container)
    desktop = Image.objects.create(
        slug="desktop", reference="lattice/desktop:latest", kind="display", title="D"
    )
    ide = Image.objects.create(slug="ide", reference="lattice/ide:latest", kind="app", title="IDE")
    ws = Workspace.objects.create(owner=owner, display=desktop, state="running")
    ws.apps.set([ide])
    image = saved_images.save(ws, "ide", "my-ide", "")
    Image.objects.filter(pk=image.pk).update(created=timezone.now() - timedelta(minutes=1))
    tasks.commit_container(image.pk)  # nobody held it: this run takes it
    assert Image.objects.get(pk=image.pk).state == "ready"

    again = saved_images.save(ws, "ide", "my-ide", "")
    Image.objects.filter(pk=again.pk).update(
        created=timezone.now() - timedelta(minutes=1), leased_until=timezone.now() + timedelta(minutes=1)
    )
    tasks.commit_container(again.pk)  # a live worker holds it
    assert Image.objects.get(pk=again.pk).state == "saving"
    lapse(Image, again.pk)  # it died
    commits = len([c for c in engine.calls if c[0] == "commit"])
    assert saved_images.recover_saves() == 1
    again.refresh_from_db()
    assert (again.state, again.recoveries) == ("ready", 1)
    assert len([c for c in engine.calls if c[0] == "commit"]) == commits + 1
