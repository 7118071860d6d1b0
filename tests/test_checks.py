from io import StringIO

import pytest
from django.core.management import call_command

from workspaces.lib import health


def test_missing_redis_is_reported_with_what_to_do(settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    problem = health.redis_problem()
    assert "Cannot reach Redis at redis://127.0.0.1:1/0" in problem
    assert "REDIS_URL" in problem


def test_missing_docker_engine_is_reported_with_what_to_do(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:1")
    problem = health.docker_problem()
    assert "Cannot reach the Docker engine" in problem
    assert "DOCKER_HOST" in problem


def test_a_malformed_docker_host_is_a_reason_not_a_crash(monkeypatch):
    from workspaces.engine import health as engine_health

    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:notaport")
    assert engine_health.engine_problem().startswith("ValueError: ")
    problem = health.docker_problem()
    assert "Cannot reach the Docker engine (ValueError: " in problem and "DOCKER_HOST" in problem


def test_system_check_reports_both(settings, monkeypatch):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:1")
    out = StringIO()
    call_command("check", stderr=out, stdout=out)
    text = out.getvalue()
    assert "lattice.W001" in text and "lattice.W002" in text


def test_system_check_is_quiet_when_all_is_reachable():
    out = StringIO()
    call_command("check", stdout=out, stderr=out)
    assert "lattice.W" not in out.getvalue()


def test_a_malformed_redis_url_is_reported_not_a_crash(settings):
    settings.REDIS_URL = "localhost:6379"
    problem = health.redis_problem()
    assert "REDIS_URL='localhost:6379' is not a Redis URL" in problem
    assert "redis://HOST:6379/0" in problem
    out = StringIO()
    call_command("check", stdout=out, stderr=out)
    assert "lattice.W001" in out.getvalue() and "is not a Redis URL" in out.getvalue()


def test_preflight_fails_with_the_message_for_a_malformed_redis_url(settings):
    from django.core.management.base import CommandError

    settings.REDIS_URL = "localhost:6379"
    with pytest.raises(CommandError, match="is not a Redis URL"):
        call_command("preflight", wait=0)


@pytest.mark.django_db
def test_diagnostics_job_fails_instead_of_hanging_when_a_probe_raises(owner, monkeypatch):
    from workspaces import tasks
    from workspaces.models import Job

    def explode():
        raise OSError("the disk is on fire")

    monkeypatch.setattr(health, "docker_problem", explode)
    job = Job.objects.create(owner=owner, kind="diagnostics")
    tasks.run_diagnostics(job.pk)
    job.refresh_from_db()
    assert job.state == "failed"
    assert job.finished is not None
    assert "OSError: the disk is on fire" in job.message
    # What was checked before the failure is kept for the page.
    assert job.result["database"]["ok"] is True


@pytest.mark.django_db
def test_diagnostics_job_reports_everything_reachable(owner):
    from workspaces import tasks
    from workspaces.models import Job

    job = Job.objects.create(owner=owner, kind="diagnostics")
    tasks.run_diagnostics(job.pk)
    job.refresh_from_db()
    assert (job.state, job.progress, job.message) == ("done", 100, "Everything Lattice needs is reachable.")
