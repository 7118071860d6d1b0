"""The display proxy as `make run` starts it: scripts/display-proxy, scripts/redis.

Started as root, it runs as the system user lattice-display: no Docker
socket, no capabilities, an environment holding only its own settings, and
Redis only as a user limited to the display-token keys and the commands the
proxy sends. It still opens displays (its group may open their sockets).
"""

from __future__ import annotations

import errno
import os
import pwd
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis
from django.conf import settings

from tests.conftest import TEST_ORIGIN
from tests.support.e2e import running
from tests.support.services import ROOT, Process, free_port, redis_server_command, wait_for_port
from workspaces.display import tokens as display_tokens
from workspaces.display.rfb import RFBClient
from workspaces.lib.redis import redis_client

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.docker]
USER = "lattice-display"
DOCKER_SOCKET = "/var/run/docker.sock"


def status_of(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


def as_identity(status: dict[str, str], action) -> int:
    """Run ``action`` in a child process with the uid, gid and groups of ``status``; its errno, or 0."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.setgroups([int(g) for g in status["Groups"].split()])
            os.setresgid(*[int(g) for g in status["Gid"].split()[:3]])
            os.setresuid(*[int(u) for u in status["Uid"].split()[:3]])
            action()
        except OSError as exc:
            code = exc.errno or 1
        finally:
            os._exit(code)
    _, wait_status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(wait_status)


@pytest.fixture(scope="module")
def display_redis_url():
    """The test Redis with the proxy's user, given by scripts/redis as `make run` does (an existing Redis)."""
    if not Path(ROOT / "var" / "redis-display-password").exists():
        pytest.fail("var/redis-display-password is missing: run scripts/setup")
    port = urlsplit(os.environ["REDIS_URL"]).port
    script = Process("redis-acl", [str(ROOT / "scripts" / "redis")], dict(os.environ, REDIS_PORT=str(port)))
    admin = redis.Redis.from_url(os.environ["REDIS_URL"])
    deadline = time.monotonic() + 10
    while not admin.acl_getuser(USER):
        assert time.monotonic() < deadline, (ROOT / "test-artifacts").exists() and script.log_path.read_text()
        time.sleep(0.1)
    script.stop()
    password = (ROOT / "var" / "redis-display-password").read_text().strip()
    return f"redis://{USER}:{password}@127.0.0.1:{port}/0"


@pytest.fixture(scope="module")
def proxy_as_run(display_redis_url):
    if os.getuid() != 0:
        pytest.fail("this test checks how root's `make run` drops the proxy's privileges: run it as root")
    try:
        pwd.getpwnam(USER)
    except KeyError:
        pytest.fail(f"no user {USER}: run scripts/setup (as root)")
    port = free_port()
    env = dict(os.environ, LATTICE_DISPLAY_REDIS_URL=display_redis_url, SECRET_KEY="not-for-the-proxy")
    proxy = Process(
        "display-proxy-as-run",
        [str(ROOT / "scripts" / "display-proxy"), "--listen", f"127.0.0.1:{port}", "--origins", TEST_ORIGIN],
        env,
    )
    wait_for_port(port)
    yield proxy, f"ws://127.0.0.1:{port}/"
    proxy.stop()


def var_password(name: str) -> str:
    return (ROOT / "var" / name).read_text().strip()


@pytest.mark.parametrize("found", ["none", "one without a password"])
def test_under_make_run_redis_refuses_the_default_user_without_its_password(found, tmp_path):
    """scripts/redis, starting its own Redis or reusing one whose default user has no password."""
    port = free_port()
    started = []
    if found != "none":
        started.append(Process("redis-plain", redis_server_command(port), dict(os.environ)))
        wait_for_port(port)
    # Its data in a folder of its own: make run's Redis persists its data.
    script = Process(
        "redis-as-run",
        [str(ROOT / "scripts" / "redis")],
        dict(os.environ, REDIS_PORT=str(port), LATTICE_VAR_DIR=str(tmp_path)),
    )
    started.append(script)
    try:
        wait_for_port(port)
        display = redis.Redis(port=port, username=USER, password=var_password("redis-display-password"))
        deadline = time.monotonic() + 10
        while True:  # until scripts/redis has set the users up
            try:
                display.get(display_tokens.PREFIX + "x")
                break
            except redis.exceptions.NoPermissionError:
                break  # logged in: the user exists
            except (redis.exceptions.AuthenticationError, redis.exceptions.ConnectionError):
                assert time.monotonic() < deadline, script.log_path.read_text()
                time.sleep(0.1)
        # The default user: with its password only. The display proxy's
        # password and none at all are refused, so the proxy cannot be the admin.
        assert redis.Redis(port=port, password=var_password("redis-password")).ping()
        with pytest.raises(redis.exceptions.AuthenticationError):
            redis.Redis(port=port).config_set("dir", "/tmp")
        with pytest.raises(redis.exceptions.AuthenticationError):
            redis.Redis(port=port, password=var_password("redis-display-password")).ping()
    finally:
        for process in reversed(started):
            process.stop()


def test_the_proxys_redis_user_reaches_display_tokens_only(display_redis_url):
    admin = redis_client()
    grant = display_tokens.Grant(
        7, "/r/f/vnc.sock", "view", ("demo:1",), user=3, container_id="a" * 64, server_pid=5
    )
    token = display_tokens.issue(admin, grant, 60)
    admin.set("celery-task-meta-x", "secret")
    proxy = redis.Redis.from_url(display_redis_url)
    # What the proxy does works ...
    assert display_tokens.consume(proxy, token) == grant
    assert not display_tokens.revoked_since(proxy, grant.all_scopes, display_tokens.now(proxy))
    connection = display_tokens.open_connection(proxy, grant, 2, 2)
    display_tokens.connection_alive(proxy, grant, connection)
    display_tokens.close_connection(proxy, grant, connection)
    # ... and nothing else.
    for command in (
        ["FLUSHALL"],
        ["KEYS", "*"],
        ["CONFIG", "SET", "dir", "/tmp"],
        ["GET", "celery-task-meta-x"],
        ["SET", display_tokens.PREFIX + "forged", "{}"],
        ["ACL", "SETUSER", USER, "+@all"],
        ["EVAL", "return redis.call('flushall')", "0"],
    ):
        with pytest.raises(redis.exceptions.NoPermissionError):
            proxy.execute_command(*command)
    assert admin.get("celery-task-meta-x") == b"secret"


def test_the_proxy_runs_unprivileged_without_docker_or_secrets(proxy_as_run, display_redis_url):
    proxy, _ = proxy_as_run
    pid = proxy.proc.pid  # scripts/display-proxy execs env, which execs the proxy: one pid
    status = status_of(pid)
    who = pwd.getpwnam(USER)
    assert status["Uid"].split() == [str(who.pw_uid)] * 4
    assert status["Gid"].split() == [str(who.pw_gid)] * 4
    assert status["Groups"].split() == [str(who.pw_gid)]  # not in the docker group
    assert int(status["CapEff"], 16) == int(status["CapBnd"], 16) == 0
    assert status["NoNewPrivs"] == "1"
    environ = dict(
        item.split("=", 1) for item in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in item
    )
    assert environ["REDIS_URL"] == display_redis_url
    assert not {"SECRET_KEY", "DATABASE_URL", "LATTICE_SQLITE_PATH", "LATTICE_TEST_DB"} & set(environ)
    # With exactly the proxy's identity, the Docker engine's socket is out of reach.
    assert as_identity(status, lambda: socket.socket(socket.AF_UNIX).connect(DOCKER_SOCKET)) == errno.EACCES
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(DOCKER_SOCKET)  # (while root here can: the socket is there)


def test_the_unprivileged_proxy_still_opens_a_display(proxy_as_run, engine, student):
    _, url = proxy_as_run
    # As scripts/setup leaves var/displays: the proxy's group owns the socket root (setgid).
    root = Path(settings.LATTICE_DISPLAY_SOCKET_DIR)
    root.mkdir(parents=True, exist_ok=True)
    os.chown(root, 0, pwd.getpwnam(USER).pw_gid)
    root.chmod(0o2750)
    ws_id = running(student, apps=())
    response = student.post(f"/api/workspaces/{ws_id}/display-token/", {"mode": "view"}, format="json")
    body = response.json()
    with RFBClient(
        f"{url}?token={body['url'].split('token=')[1]}", body["password"], origin=TEST_ORIGIN
    ) as rfb:
        assert not rfb.frame().is_blank()
