"""Settings from the environment: typed values, secrets from files, clear errors."""

import json
import os
import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured

from tests.support.services import ROOT
from workspaces.lib import env


def test_a_secret_comes_from_the_file_named_by_name_file(monkeypatch, tmp_path):
    secret = tmp_path / "secret-key"
    secret.write_text("from-the-file\n")
    monkeypatch.setenv("SECRET_KEY", "from-the-environment")
    monkeypatch.setenv("SECRET_KEY_FILE", str(secret))
    assert env.string("SECRET_KEY") == "from-the-file"


def test_without_name_file_the_variable_or_default_is_used(monkeypatch):
    monkeypatch.delenv("SOME_SETTING_FILE", raising=False)
    monkeypatch.delenv("SOME_SETTING", raising=False)
    assert env.string("SOME_SETTING", "fallback") == "fallback"
    monkeypatch.setenv("SOME_SETTING", "set")
    assert env.string("SOME_SETTING", "fallback") == "set"


def test_a_missing_name_file_names_the_variable_and_the_path(monkeypatch, tmp_path):
    missing = tmp_path / "nope" / "secret-key"
    monkeypatch.setenv("SECRET_KEY_FILE", str(missing))
    with pytest.raises(ImproperlyConfigured) as caught:
        env.string("SECRET_KEY")
    message = str(caught.value)
    assert f"SECRET_KEY_FILE={missing}" in message
    assert "No such file or directory" in message
    assert "unset SECRET_KEY_FILE" in message


def test_typed_values_from_files_too(monkeypatch, tmp_path):
    (tmp_path / "n").write_text("7\n")
    monkeypatch.setenv("LATTICE_SOMETHING_FILE", str(tmp_path / "n"))
    assert env.integer("LATTICE_SOMETHING", 1) == 7


@pytest.mark.parametrize(
    ("raw", "expected"), [("1", True), ("Yes", True), ("on", True), ("0", False), ("off", False)]
)
def test_booleans(monkeypatch, raw, expected):
    monkeypatch.setenv("DEBUG", raw)
    assert env.boolean("DEBUG") is expected


def test_an_invalid_boolean_says_which_variable_and_what_to_use(monkeypatch):
    monkeypatch.setenv("DEBUG", "maybe")
    with pytest.raises(ImproperlyConfigured, match=r"DEBUG='maybe' is not a boolean: use 1 or 0"):
        env.boolean("DEBUG")


def test_an_invalid_integer_says_which_variable(monkeypatch):
    monkeypatch.setenv("LATTICE_MAX_RUNNING_WORKSPACES", "two")
    with pytest.raises(
        ImproperlyConfigured, match=r"LATTICE_MAX_RUNNING_WORKSPACES='two' is not a whole number"
    ):
        env.integer("LATTICE_MAX_RUNNING_WORKSPACES", 2)
    monkeypatch.setenv("LATTICE_SPAWN_TIMEOUT", "1 minute")
    with pytest.raises(ImproperlyConfigured, match=r"LATTICE_SPAWN_TIMEOUT='1 minute' is not a number"):
        env.number("LATTICE_SPAWN_TIMEOUT", 60.0)


def test_a_value_below_its_minimum_says_which_variable_and_the_bound(monkeypatch):
    monkeypatch.setenv("LATTICE_BACKUPS_KEPT", "0")
    with pytest.raises(ImproperlyConfigured, match=r"^LATTICE_BACKUPS_KEPT=0: it must be at least 1\.$"):
        env.integer("LATTICE_BACKUPS_KEPT", 5, minimum=1)
    monkeypatch.setenv("LATTICE_BACKUPS_KEPT", "1")
    assert env.integer("LATTICE_BACKUPS_KEPT", 5, minimum=1) == 1
    for raw in ("0.5", "-60", "nan"):
        monkeypatch.setenv("LATTICE_BACKUP_INTERVAL", raw)
        with pytest.raises(ImproperlyConfigured, match=r"LATTICE_BACKUP_INTERVAL=.*: it must be at least 1"):
            env.number("LATTICE_BACKUP_INTERVAL", 3600.0, minimum=1)
    monkeypatch.delenv("LATTICE_BACKUP_INTERVAL")
    assert env.number("LATTICE_BACKUP_INTERVAL", 3600.0, minimum=1) == 3600.0


def test_csv(monkeypatch):
    monkeypatch.setenv("ALLOWED_HOSTS", " a.example, b.example ,,")
    assert env.csv("ALLOWED_HOSTS") == ["a.example", "b.example"]


def _settings_in_a_fresh_process(**variables: str) -> subprocess.CompletedProcess:
    """Import portal.settings as a new process would; no database server is contacted."""
    clean = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DATABASE_URL_FILE")}
    code = "import json, portal.settings as s; print(json.dumps(s.DATABASES['default'], default=str))"
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**clean, **variables},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_database_url_selects_postgresql():
    done = _settings_in_a_fresh_process(DATABASE_URL="postgres://lattice:pw@db.example.org:5433/portal")
    assert done.returncode == 0, done.stderr
    database = json.loads(done.stdout)
    assert database["ENGINE"] == "django.db.backends.postgresql"
    assert (database["NAME"], database["USER"], database["PASSWORD"]) == ("portal", "lattice", "pw")
    assert (database["HOST"], database["PORT"]) == ("db.example.org", 5433)


def test_peer_authentication_url_uses_the_local_socket():
    # deploy/lattice.env.example's value: no host, no password.
    done = _settings_in_a_fresh_process(DATABASE_URL="postgres:///lattice")
    assert done.returncode == 0, done.stderr
    database = json.loads(done.stdout)
    assert database["ENGINE"] == "django.db.backends.postgresql"
    assert (database["NAME"], database["HOST"], database["PASSWORD"]) == ("lattice", "", "")


def test_no_database_url_is_sqlite(tmp_path):
    done = _settings_in_a_fresh_process(LATTICE_SQLITE_PATH=str(tmp_path / "db.sqlite3"))
    assert done.returncode == 0, done.stderr
    database = json.loads(done.stdout)
    assert database["ENGINE"] == "django.db.backends.sqlite3"
    assert database["NAME"] == str(tmp_path / "db.sqlite3")


def test_a_bad_setting_stops_start_up_with_its_name(tmp_path):
    done = _settings_in_a_fresh_process(SECRET_KEY_FILE=str(tmp_path / "missing"))
    assert done.returncode != 0
    assert f"ImproperlyConfigured: SECRET_KEY_FILE={tmp_path / 'missing'}: cannot read it" in done.stderr
    done = _settings_in_a_fresh_process(DEBUG="maybe")
    assert "ImproperlyConfigured: DEBUG='maybe' is not a boolean" in done.stderr
    for name in (
        "LATTICE_BROADCAST_CONCURRENCY",
        "LATTICE_BACKUPS_KEPT",
        "LATTICE_BACKUP_INTERVAL",
        "LATTICE_BUILD_CPUS",
    ):
        done = _settings_in_a_fresh_process(**{name: "0"})
        assert done.returncode != 0
        assert f"ImproperlyConfigured: {name}=0" in done.stderr and "at least 1" in done.stderr
