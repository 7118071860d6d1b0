from io import StringIO

from django.core.management import call_command

from workspaces import services_health


def test_missing_redis_is_reported_with_what_to_do(settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    problem = services_health.redis_problem()
    assert "Cannot reach Redis at redis://127.0.0.1:1/0" in problem
    assert "REDIS_URL" in problem


def test_missing_docker_engine_is_reported_with_what_to_do(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:1")
    problem = services_health.docker_problem()
    assert "Cannot reach the Docker engine" in problem
    assert "DOCKER_HOST" in problem


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
