"""Diagnostics never show a URL's password: the dashboards' System check, its
job, ``manage.py check`` (health.redact on every message)."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command

from workspaces import tasks
from workspaces.lib import health, object_store
from workspaces.models import Job

SECRET = "s3cret-pw-9f2"


def test_an_unreachable_redis_is_named_without_its_password(settings):
    settings.REDIS_URL = f"redis://:{SECRET}@127.0.0.1:1/0"
    problem = health.redis_problem()
    assert "Cannot reach Redis at redis://:***@127.0.0.1:1/0" in problem
    assert SECRET not in problem
    out = StringIO()
    call_command("check", stdout=out, stderr=out)
    assert "lattice.W001" in out.getvalue() and SECRET not in out.getvalue()


def test_a_malformed_redis_url_is_named_without_its_password(settings):
    settings.REDIS_URL = f"admin:{SECRET}@localhost:6379"
    problem = health.redis_problem()
    assert "is not a Redis URL" in problem and "admin:***@localhost:6379" in problem
    assert SECRET not in problem


def test_an_s3_endpoint_with_credentials_is_named_without_them(settings):
    settings.LATTICE_OBJECT_STORAGE = "s3://backups/lattice"
    settings.LATTICE_S3_ENDPOINT_URL = f"http://minio:{SECRET}@127.0.0.1:1"
    settings.LATTICE_S3_ACCESS_KEY = "minio"
    settings.LATTICE_S3_SECRET_KEY = "an0ther-secret-key"
    settings.LATTICE_S3_REGION = "us-east-1"
    object_store.store.cache_clear()
    try:
        problem = health.object_storage_problem()
    finally:
        object_store.store.cache_clear()
    assert problem and "Cannot use the backup storage" in problem
    assert "minio:***@127.0.0.1:1" in problem  # the endpoint is named, its password is not
    assert SECRET not in problem and "an0ther-secret-key" not in problem


def test_a_database_error_that_repeats_the_url_is_shown_without_the_password(settings, monkeypatch):
    def refuse() -> None:
        raise RuntimeError(f'invalid dsn "postgres://lattice:{SECRET}@127.0.0.1:1/lattice"')

    monkeypatch.setattr(health.connection, "ensure_connection", refuse)
    problem = health.database_problem()
    assert "postgres://lattice:***@127.0.0.1:1/lattice" in problem
    assert SECRET not in problem


@pytest.mark.django_db
def test_the_system_check_job_shows_no_password(owner, settings, monkeypatch):
    settings.REDIS_URL = f"redis://:{SECRET}@127.0.0.1:1/0"

    def explode() -> None:
        raise OSError(f"cannot reach tcp://docker:{SECRET}@127.0.0.1:1")

    monkeypatch.setattr(health, "docker_problem", explode)
    job = Job.objects.create(owner=owner, kind="diagnostics")
    tasks.run_diagnostics(job.pk)
    job.refresh_from_db()
    assert job.state == "failed"
    assert "docker:***@127.0.0.1:1" in job.message
    assert "redis://:***@127.0.0.1:1/0" in job.result["Redis"]["detail"]
    assert SECRET not in job.message and SECRET not in str(job.result)
