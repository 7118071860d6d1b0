"""The Docker backend against the real engine: desktop + ide workspaces."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.engine.conftest import (
    DESKTOP,
    IDE,
    PASSWORD,
    PREFIX,
    VIEW_PASSWORD,
    docker,
    exists,
    inspect,
    prefixed,
)
from workspaces.display.rfb import RFBClient, RFBError
from workspaces.display.sockets import DisplayTarget
from workspaces.engine import ContainerSpec, Limits, names
from workspaces.engine.errors import EngineError, ImageNotFound, InvalidSpecError, StartFailed, StartTimeout

XENV = "DISPLAY=:0 XAUTHORITY=/tmp/.X11-unix/Xauthority"


def run(backend, spec, container: str, script: str) -> str:
    code, out = backend.exec(spec.workspace_id, container, ["sh", "-c", script])
    assert code == 0, out
    return out.decode()


def wait_until(check, timeout: float = 20, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout} s")
        time.sleep(0.2)


def window_geometry(backend, spec, name: str) -> str:
    """xdotool's geometry of a visible window whose title has name, or ""."""
    code, out = backend.exec(
        spec.workspace_id,
        "display",
        ["sh", "-c", f"{XENV} xdotool search --onlyvisible --name {name} getwindowgeometry --shell"],
    )
    return out.decode() if code == 0 else ""


def banner(path: str) -> bytes:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(2)
        sock.connect(path)
        return sock.recv(12)


def connect(endpoint, password: str) -> RFBClient:
    return RFBClient.unix(DisplayTarget.from_endpoint(endpoint.as_dict()), password, timeout=10)


def type_text(client: RFBClient, text: str) -> None:
    for ch in text:
        keysym = 0xFF0D if ch == "\n" else ord(ch)
        client.key(keysym, down=True)
        client.key(keysym, down=False)


def container_names(spec) -> list[str]:
    return [names.container(PREFIX, spec.workspace_id, c.name) for c in spec.containers]


# -- a running workspace ---------------------------------------------------


def test_workspace_runs_and_its_display_answers_vnc(backend, workspace):
    assert backend.poll(workspace.workspace_id) == "running"
    states = backend.containers(workspace.workspace_id)
    assert [(c.name, c.image, c.state) for c in states] == [
        ("display", DESKTOP, "running"),
        ("ide", IDE, "running"),
    ]
    endpoint = backend.endpoint(workspace.workspace_id)
    assert endpoint is not None and endpoint.path.startswith(backend.socket_root)
    assert banner(endpoint.path) == b"RFB 003.008\n"


def test_ide_window_is_drawn_on_the_desktop(backend, workspace):
    wait_until(lambda: window_geometry(backend, workspace, "Geany"), what="a Geany window")
    endpoint = backend.endpoint(workspace.workspace_id)
    with connect(endpoint, PASSWORD) as client:
        frame = client.frame()
    assert (frame.width, frame.height) == (1280, 800)
    # A background gradient, a panel and a window: far from a flat screen.
    assert frame.distinct_colours() > 50
    assert frame.rgb(5, 5) != (0, 0, 0)


def test_wrong_vnc_password_is_refused(backend, workspace):
    endpoint = backend.endpoint(workspace.workspace_id)
    with pytest.raises(RFBError, match=r"(?i)authentication fail"):
        connect(endpoint, "not-it-1")


def test_view_password_sees_but_cannot_type_or_point(backend, desktop):
    # A display alone: no app window that could take the focus from the xterm.
    workspace = desktop
    ws = workspace.workspace_id
    # An xterm that writes whatever is typed into it to a file.
    run(
        backend,
        workspace,
        "display",
        f"{XENV} setsid xterm -geometry 40x5+50+50 -T typing -e sh -c 'cat > /tmp/typed' "
        ">/dev/null 2>&1 < /dev/null &",
    )
    wait_until(lambda: window_geometry(backend, workspace, "typing"), what="the xterm")
    run(backend, workspace, "display", f"{XENV} xdotool search --name typing windowactivate --sync")
    endpoint = backend.endpoint(ws)

    def pointer() -> str:
        return run(backend, workspace, "display", f"{XENV} xdotool getmouselocation --shell")

    with connect(endpoint, VIEW_PASSWORD) as viewer:
        viewer.frame()  # the view password does get the screen
        before = pointer()
        viewer.pointer(7, 9)
        type_text(viewer, "viewer\n")
        time.sleep(0.5)
        assert pointer() == before
    with connect(endpoint, PASSWORD) as owner:
        owner.pointer(100, 70)
        type_text(owner, "owner\n")
        wait_until(lambda: "X=100" in pointer(), what="the pointer to move")
    wait_until(
        lambda: run(backend, workspace, "display", "cat /tmp/typed 2>/dev/null || true") == "owner\n",
        what="typed text",
    )


def test_root_filesystems_are_private_and_data_is_shared(backend, workspace):
    run(backend, workspace, "ide", "echo private > /home/user/only-in-ide.txt; echo tmp > /tmp/only-in-ide")
    for path in ("/home/user/only-in-ide.txt", "/tmp/only-in-ide"):
        code, _ = backend.exec(workspace.workspace_id, "display", ["test", "-e", path])
        assert code == 1
    digest = run(
        backend,
        workspace,
        "ide",
        "head -c 1048576 /dev/urandom > /data/shared.bin && sha256sum < /data/shared.bin",
    )
    assert run(backend, workspace, "display", "sha256sum < /data/shared.bin") == digest
    run(backend, workspace, "display", "echo back > /data/from-display.txt")
    assert run(backend, workspace, "ide", "cat /data/from-display.txt") == "back\n"


def test_containers_are_hardened(backend, workspace):
    network = names.network(PREFIX, workspace.workspace_id)
    for name in container_names(workspace):
        info = inspect("container", name)
        host = info["HostConfig"]
        is_display = name.endswith("-display")
        assert info["Config"]["User"] == "1000:1000"
        assert host["CapDrop"] == ["ALL"]
        assert "no-new-privileges" in host["SecurityOpt"]
        assert host["Privileged"] is False
        assert host["Memory"] == 1024**3
        assert host["NanoCpus"] == 1_000_000_000
        assert host["PidsLimit"] == 256
        assert host["ShmSize"] == 256 * 1024**2
        assert not host.get("PortBindings")
        assert not info["NetworkSettings"]["Ports"] or all(
            not bound for bound in info["NetworkSettings"]["Ports"].values()
        )
        # The display is on no network at all; the apps only on their workspace's own.
        assert host["NetworkMode"] == ("none" if is_display else network)
        assert list(info["NetworkSettings"]["Networks"]) == (["none"] if is_display else [network])
        mounts = {m["Destination"]: m for m in info["Mounts"]}
        volumes = {"/data", "/tmp/.X11-unix"}
        assert set(mounts) == (volumes | {"/run/lattice-vnc"} if is_display else volumes)
        assert all(mounts[v]["Type"] == "volume" for v in volumes)
        if is_display:
            socket_dir = mounts["/run/lattice-vnc"]
            assert socket_dir["Type"] == "bind"
            assert socket_dir["Source"] == str(Path(backend.endpoint(workspace.workspace_id).path).parent)
        assert "docker.sock" not in str(info["Mounts"]) + str(host.get("Binds"))
    # Nothing runs as root, in either container.
    for container in ("display", "ide"):
        users = run(backend, workspace, container, "ps -eo uid= | sort -u").split()
        assert users == ["1000"], (container, users)
    # Xvnc listens on its socket only: no TCP port in the display.
    listening = run(
        backend, workspace, "display", "cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | awk '$4 == \"0A\"'"
    )
    assert listening == ""
    # Only uid 1000 and the folder's group may use the socket.
    mode = os.stat(backend.endpoint(workspace.workspace_id).path).st_mode & 0o777
    assert mode == 0o660


def test_vnc_passwords_reach_no_process_of_the_display(backend, workspace):
    env_of_all = run(
        backend,
        workspace,
        "display",
        "for p in $(pgrep -x Xvnc) $(pgrep -x openbox) $(pgrep -x tini); do "
        "tr '\\0' '\\n' < /proc/$p/environ; done",
    )
    assert "LATTICE_VNC" not in env_of_all
    assert "Xvnc" in run(backend, workspace, "display", "ps -eo args")
    assert run(backend, workspace, "display", "stat -c '%a %u' /dev/shm/lattice-vnc/passwd") == "600 1000\n"
    # Only the display is given the passwords.
    ide_env = inspect("container", names.container(PREFIX, workspace.workspace_id, "ide"))["Config"]["Env"]
    assert not any(e.startswith("LATTICE_VNC") for e in ide_env)


def test_every_object_is_labelled(backend, workspace):
    ws = workspace.workspace_id
    for name in container_names(workspace):
        labels = inspect("container", name)["Config"]["Labels"]
        assert labels["lattice.workspace"] == ws
        assert labels["lattice.owner"] == workspace.owner
        assert labels["lattice.prefix"] == PREFIX
        assert labels["lattice.role"] in ("display", "app")
    assert inspect("network", names.network(PREFIX, ws))["Labels"]["lattice.role"] == "network"
    assert inspect("volume", names.x11_volume(PREFIX, ws))["Labels"]["lattice.role"] == "x11"
    data = inspect("volume", names.data_volume(PREFIX, workspace.owner_id))["Labels"]
    assert data["lattice.role"] == "data"
    assert "lattice.workspace" not in data  # shared by the owner's workspaces
    assert backend.list_workspaces()[ws] == "running"


# -- lifecycle ---------------------------------------------------------------


def test_data_and_filesystems_survive_stop_start_and_data_survives_remove(backend, make_spec):
    spec = make_spec()
    ws = spec.workspace_id
    backend.start(spec)
    digest = run(
        backend, spec, "ide", "head -c 300000 /dev/urandom > /data/keep.bin && sha256sum < /data/keep.bin"
    )
    run(backend, spec, "ide", "echo mine > /home/user/in-ide-fs.txt")
    ids = {n: inspect("container", n)["Id"] for n in container_names(spec)}

    backend.stop(ws)
    assert backend.poll(ws) == "stopped"
    assert [c.state for c in backend.containers(ws)] == ["stopped", "stopped"]
    assert backend.endpoint(ws) is None
    backend.start(spec)
    assert backend.poll(ws) == "running"
    assert {n: inspect("container", n)["Id"] for n in container_names(spec)} == ids  # reused, not recreated
    assert run(backend, spec, "display", "sha256sum < /data/keep.bin") == digest
    assert run(backend, spec, "ide", "cat /home/user/in-ide-fs.txt") == "mine\n"

    backend.remove(ws)
    assert backend.poll(ws) == "missing"
    assert not exists("network", names.network(PREFIX, ws))
    assert not exists("volume", names.x11_volume(PREFIX, ws))
    assert not socket_dir(backend, spec).exists()
    assert exists("volume", names.data_volume(PREFIX, spec.owner_id))
    backend.start(spec)
    assert run(backend, spec, "ide", "sha256sum < /data/keep.bin") == digest
    code, _ = backend.exec(ws, "ide", ["test", "-e", "/home/user/in-ide-fs.txt"])
    assert code == 1  # a new container, a fresh root filesystem
    backend.remove(ws)


def test_start_is_idempotent(backend, workspace):
    ids = [inspect("container", n)["Id"] for n in container_names(workspace)]
    endpoint = backend.endpoint(workspace.workspace_id)
    assert backend.start(workspace) == endpoint
    assert [inspect("container", n)["Id"] for n in container_names(workspace)] == ids


def test_a_display_alone_needs_no_network(backend, make_spec):
    spec = make_spec(apps=())
    endpoint = backend.start(spec)
    assert not exists("network", names.network(PREFIX, spec.workspace_id))
    assert banner(endpoint.path) == b"RFB 003.008\n"
    backend.remove(spec.workspace_id)
    assert_nothing_left_but_data(backend, spec)


def test_stop_and_remove_are_idempotent(backend, make_spec):
    spec = make_spec(apps=())
    backend.start(spec)
    backend.stop(spec.workspace_id)
    backend.stop(spec.workspace_id)
    backend.remove(spec.workspace_id)
    backend.remove(spec.workspace_id)
    backend.stop(spec.workspace_id)
    for missing in ("never-was", "0"):
        backend.stop(missing)
        backend.remove(missing)
        assert backend.poll(missing) == "missing"
        assert backend.containers(missing) == []
        assert backend.endpoint(missing) is None


def test_a_new_vnc_password_recreates_only_the_display(backend, make_spec):
    spec = make_spec()
    backend.start(spec)
    ide_id = inspect("container", names.container(PREFIX, spec.workspace_id, "ide"))["Id"]
    backend.stop(spec.workspace_id)
    changed = make_spec(
        workspace_id=spec.workspace_id, owner=spec.owner, owner_id=spec.owner_id, vnc_password="new-pw-1"
    )
    endpoint = backend.start(changed)
    connect(endpoint, "new-pw-1").close()
    with pytest.raises(RFBError):
        connect(endpoint, PASSWORD)
    assert inspect("container", names.container(PREFIX, spec.workspace_id, "ide"))["Id"] == ide_id
    backend.remove(spec.workspace_id)


def test_poll_reports_failed_when_the_display_dies(backend, workspace):
    docker("kill", names.container(PREFIX, workspace.workspace_id, "display"))
    assert backend.poll(workspace.workspace_id) == "failed"
    assert backend.list_workspaces()[workspace.workspace_id] == "failed"
    assert backend.endpoint(workspace.workspace_id) is None


def test_kiosk_has_no_panel_and_the_app_fills_the_screen(backend, make_spec):
    spec = make_spec(kiosk=True, geometry="1024x768")
    backend.start(spec)
    # Maximised and undecorated: exactly the screen.
    wait_until(
        lambda: "WIDTH=1024\nHEIGHT=768" in window_geometry(backend, spec, "Geany"),
        what="a full-screen Geany window",
    )
    code, _ = backend.exec(spec.workspace_id, "display", ["pgrep", "-x", "tint2"])
    assert code == 1
    backend.remove(spec.workspace_id)


# -- failures ----------------------------------------------------------------


@pytest.fixture(scope="module")
def never_ready_image() -> str:
    """A display image whose VNC server never answers: it only sleeps."""
    tag = f"{PREFIX}/never-ready:latest"
    dockerfile = 'FROM lattice/base:latest\nENTRYPOINT ["sleep", "infinity"]\n'
    subprocess.run(
        ["docker", "build", "-q", "-t", tag, "-"],
        input=dockerfile,
        text=True,
        check=True,
        capture_output=True,
    )
    yield tag
    docker("rmi", "-f", tag, check=False)


def socket_dir(backend, spec) -> Path:
    return Path(backend.socket_root) / names.display_socket_dir(PREFIX, spec.workspace_id)


def assert_nothing_left_but_data(backend, spec) -> None:
    ws = spec.workspace_id
    assert not any(n.startswith(names.workspace_base(PREFIX, ws) + "-") for n in prefixed("container"))
    assert not exists("network", names.network(PREFIX, ws))
    assert not exists("volume", names.x11_volume(PREFIX, ws))
    assert not socket_dir(backend, spec).exists()
    assert exists("volume", names.data_volume(PREFIX, spec.owner_id))


def test_start_timeout_removes_what_it_created(backend, make_spec, never_ready_image):
    spec = make_spec(display=ContainerSpec("display", never_ready_image, "display"))
    began = time.monotonic()
    with pytest.raises(StartTimeout, match="did not answer within 2 s"):
        backend.start(spec, timeout=2)
    assert time.monotonic() - began < 6
    assert_nothing_left_but_data(backend, spec)


def test_a_display_that_exits_fails_fast_with_its_output(backend, make_spec):
    display = ContainerSpec(
        "display", "lattice/base:latest", "display", command=("sh", "-c", "echo no display here >&2; exit 3")
    )
    spec = make_spec(display=display)
    began = time.monotonic()
    with pytest.raises(StartFailed, match=r"code 3.*no display here"):
        backend.start(spec, timeout=30)
    assert time.monotonic() - began < 5
    assert_nothing_left_but_data(backend, spec)


def test_a_missing_image_is_reported_and_cleaned_up(backend, make_spec):
    spec = make_spec()
    spec = make_spec(workspace_id=spec.workspace_id, owner=spec.owner, owner_id=spec.owner_id)
    bad = type(spec)(
        spec.workspace_id,
        spec.owner,
        spec.display,
        (ContainerSpec("ide", f"{PREFIX}/no-such-image:1"),),
        vnc_password=PASSWORD,
        owner_id=spec.owner_id,
    )
    with pytest.raises(ImageNotFound, match="no-such-image"):
        backend.start(bad)
    assert_nothing_left_but_data(backend, bad)


def test_a_workspace_without_vnc_password_is_refused(backend, make_spec):
    with pytest.raises(InvalidSpecError):
        backend.start(make_spec(vnc_password=""))


def test_progress_is_reported_in_order_and_a_broken_callback_is_harmless(backend, make_spec):
    seen: list[tuple[int, str]] = []

    def progress(percent: int, message: str) -> None:
        seen.append((percent, message))
        raise RuntimeError("the channel layer is down")

    spec = make_spec()
    backend.start(spec, progress=progress)
    percents = [p for p, _ in seen]
    assert percents == sorted(percents) and percents[-1] == 100
    assert (80, "Starting ide") in seen
    backend.remove(spec.workspace_id)


def test_leftovers_without_containers_are_listed_for_reconcile(backend, make_spec):
    spec = make_spec(apps=())
    backend.start(spec)
    docker("rm", "-f", names.container(PREFIX, spec.workspace_id, "display"))
    docker("volume", "rm", names.x11_volume(PREFIX, spec.workspace_id))
    # Only the display's socket folder is left: that is enough to be listed.
    assert socket_dir(backend, spec).exists()
    assert backend.list_workspaces()[spec.workspace_id] == "missing"
    backend.remove(spec.workspace_id)
    assert spec.workspace_id not in backend.list_workspaces()
    assert_nothing_left_but_data(backend, spec)


# -- images and speed --------------------------------------------------------


def test_images_describe_themselves_with_labels(backend):
    labels = backend.image_labels(DESKTOP)
    assert labels["lattice.kind"] == "display"
    assert labels["lattice.title"] == "Desktop"
    assert backend.image_labels(IDE)["lattice.kind"] == "app"
    with pytest.raises(ImageNotFound):
        backend.image_labels(f"{PREFIX}/no-such-image:1")
    images = {i["name"]: i for i in backend.list_images()}
    assert images["desktop"]["reference"] == DESKTOP
    assert images["ide"]["labels"]["lattice.title"] == "IDE (Geany)"
    assert images["ide"]["size"] > 0 and images["ide"]["created"].tzinfo is not None


def test_limits_come_from_the_spec(backend, make_spec):
    spec = make_spec(apps=())
    spec = type(spec)(
        spec.workspace_id,
        spec.owner,
        ContainerSpec(
            "display",
            DESKTOP,
            "display",
            limits=Limits(mem_limit="768m", cpus=0.5, pids_limit=128, shm_size="64m"),
        ),
        vnc_password=PASSWORD,
        owner_id=spec.owner_id,
    )
    backend.start(spec)
    host = inspect("container", names.container(PREFIX, spec.workspace_id, "display"))["HostConfig"]
    assert (host["Memory"], host["NanoCpus"], host["PidsLimit"], host["ShmSize"]) == (
        768 * 1024**2,
        500_000_000,
        128,
        64 * 1024**2,
    )
    backend.remove(spec.workspace_id)


# -- saving a container as an image ----------------------------------------------


def test_a_saved_app_keeps_its_files_and_leaks_no_workspace_detail(backend, make_spec):
    spec = make_spec()
    ws = spec.workspace_id
    backend.start(spec)
    run(backend, spec, "ide", "echo saved > /home/user/hello.txt && echo data > /data/not-in-image.txt")
    changes = backend.diff(ws, "ide")
    assert {"path": "/home/user/hello.txt", "kind": "added"} in changes
    assert not any(c["path"].startswith("/data") for c in changes)

    reference = f"{PREFIX}/u/saved-ide:1"
    saved = backend.commit(ws, "ide", reference, labels={"lattice.kind": "app", "lattice.title": "Mine"})
    try:
        assert saved["reference"] == reference and saved["size"] > 0
        assert backend.image_size(reference) == saved["size"]
        labels = backend.image_labels(reference)
        assert labels["lattice.title"] == "Mine"
        assert labels.get("lattice.workspace", "") == "" and labels.get("lattice.owner", "") == ""
        mine = next(i for i in backend.list_images() if i["reference"] == reference)
        assert "lattice.workspace" not in mine["labels"] and mine["labels"]["lattice.kind"] == "app"

        other = make_spec(apps=())
        other = type(other)(
            other.workspace_id,
            other.owner,
            other.display,
            (ContainerSpec("ide", reference),),
            vnc_password=PASSWORD,
            owner_id=other.owner_id,
        )
        backend.start(other)
        assert run(backend, other, "ide", "cat /home/user/hello.txt") == "saved\n"
        code, _ = backend.exec(other.workspace_id, "ide", ["test", "-e", "/data/not-in-image.txt"])
        assert code == 1  # another owner: another data volume, and /data is never in an image
        backend.remove(other.workspace_id)
    finally:
        backend.remove_image(reference)
    backend.remove_image(reference)  # already gone: fine
    with pytest.raises(ImageNotFound):
        backend.image_size(reference)
    backend.remove(ws)


def test_a_saved_display_does_not_keep_the_vnc_passwords(backend, workspace):
    reference = f"{PREFIX}/u/saved-display:1"
    backend.commit(workspace.workspace_id, "display", reference, labels={"lattice.kind": "display"})
    try:
        env = inspect("image", reference)["Config"]["Env"]
        assert PASSWORD not in str(env) and VIEW_PASSWORD not in str(env)
    finally:
        backend.remove_image(reference)


def test_an_image_in_use_is_not_removed(backend, workspace):
    reference = f"{PREFIX}/u/in-use:1"
    backend.commit(workspace.workspace_id, "ide", reference, labels={})
    spec = type(workspace)(
        f"{workspace.workspace_id}b",
        workspace.owner,
        workspace.display,
        (ContainerSpec("ide", reference),),
        vnc_password=PASSWORD,
        owner_id=workspace.owner_id,
    )
    backend.start(spec)
    with pytest.raises(EngineError, match="used by a container"):
        backend.remove_image(reference)
    backend.remove(spec.workspace_id)
    backend.remove_image(reference)
    assert not exists("image", reference)


def test_a_stop_right_after_start_is_quick(backend, make_spec):
    # docker stop's single SIGTERM can arrive before PID 1 handles signals;
    # stop() sends it again rather than waiting for the SIGKILL timeout.
    spec = make_spec()
    for _ in range(3):
        backend.start(spec)
        began = time.monotonic()
        backend.stop(spec.workspace_id)
        assert time.monotonic() - began < 3
        assert backend.poll(spec.workspace_id) == "stopped"
    backend.remove(spec.workspace_id)
