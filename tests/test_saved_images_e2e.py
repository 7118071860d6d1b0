"""Save as image, end to end on the real engine and a real Celery worker."""

from __future__ import annotations

import json
import subprocess
import threading
import time

import pytest
from django.conf import settings

from tests.support.e2e import docker, image_exists, running, sh, wait_for_state, wait_until_gone
from tests.support.services import ARTIFACTS
from workspaces.models import Image

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.docker]


def wait_for_image(image_id: int, timeout: float = 180) -> Image:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        image = Image.objects.get(pk=image_id)
        if image.state != "saving":
            return image
        time.sleep(0.2)
    raise AssertionError(f"image {image_id} still saving after {timeout} s")


def image_paths(reference: str) -> set[str]:
    """Every path of the image's own filesystem, without any mount: what the commit really kept."""
    container = docker(
        "create", "--label", f"lattice.prefix={settings.LATTICE_ENGINE_PREFIX}", reference, "true"
    ).strip()
    try:
        export = subprocess.Popen(["docker", "export", container], stdout=subprocess.PIPE)
        listing = subprocess.run(
            ["tar", "-t"], stdin=export.stdout, capture_output=True, text=True, check=True
        )
        assert export.wait() == 0
    finally:
        docker("rm", "-f", container)
    return {line.removeprefix("./").rstrip("/") for line in listing.stdout.splitlines()}


def assert_no_secrets_or_data(reference: str) -> dict:
    """No /data content, X cookie or VNC password in the image; returns its Config."""
    paths = image_paths(reference)
    assert "usr/bin" in paths  # the listing is the real filesystem
    assert not [p for p in paths if p.startswith("data/")]
    assert "tmp/.X11-unix/Xauthority" not in paths
    assert not [p for p in paths if p.startswith("dev/shm/lattice-vnc")]
    config = json.loads(docker("image", "inspect", reference))[0]["Config"]
    for name in ("LATTICE_VNC_PASSWORD", "LATTICE_VNC_VIEW_PASSWORD"):
        assert [e for e in config["Env"] if e.startswith(f"{name}=")] in ([], [f"{name}="]), config["Env"]
    return config


def save(client, ws_id: int, container: str, name: str):
    return client.post(
        f"/api/workspaces/{ws_id}/containers/{container}/commit/",
        {"name": name, "description": "tuned"},
        format="json",
    )


def test_a_saved_ide_keeps_files_and_settings_but_never_data(
    engine, student, api_client, stranger, client, owner
):
    ws_id = running(student)
    sh(
        engine,
        ws_id,
        "ide",
        "echo 'my notes' > /home/user/notes.txt && git config --global user.name 'Ada L'",
    )
    sh(engine, ws_id, "ide", "echo 'student data' > /data/at-save-time.txt")

    started = time.monotonic()
    response = save(student, ws_id, "ide", "my-ide")
    assert response.status_code == 202
    image = wait_for_image(response.json()["id"])
    seconds = time.monotonic() - started
    assert image.state == "ready", image.message
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "save-ide-seconds.json").write_text(json.dumps({"seconds": round(seconds, 2)}))
    assert image.reference == f"{settings.LATTICE_ENGINE_PREFIX}/u/owner/my-ide:1"
    assert image.size > 0 and 0 < image.added_size < image.size
    assert image.parent.slug == "ide"
    paths = [c["path"] for c in image.changes["sample"]]
    assert "/home/user/notes.txt" in paths and "/home/user/.gitconfig" in paths
    assert not any(p.startswith("/data") for p in paths)

    # The image itself: no /data content, no X cookie, no VNC password, the source's labels.
    listing = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "--user",
            "1000:1000",
            "--entrypoint",
            "sh",
            image.reference,
            "-c",
            "ls -A /data; ls -A /tmp/.X11-unix",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert listing.stdout.strip() == ""
    config = assert_no_secrets_or_data(image.reference)
    assert config["Labels"]["lattice.kind"] == "app"
    assert config["Labels"]["lattice.parent"] == "lattice/ide:latest"
    assert config["Labels"]["lattice.parent-title"] == image.parent.title
    assert config["Labels"]["lattice.saved-by"] == "owner"

    # Launch a new workspace with the saved IDE: the file and the setting are there.
    again = running(student, apps=("owner/my-ide:1",))
    assert sh(engine, again, "my-ide", "cat /home/user/notes.txt").strip() == "my notes"
    assert sh(engine, again, "my-ide", "git config --global user.name").strip() == "Ada L"

    # The detail page lists the added file.
    client.force_login(owner)
    page = client.get(f"/images/{image.pk}/").content.decode()
    assert "/home/user/notes.txt" in page and "/home/user" in page

    # Another user neither sees nor launches it.
    api_client.force_authenticate(stranger)
    assert "owner/my-ide:1" not in [i["slug"] for i in api_client.get("/api/images/").json()]
    assert api_client.get(f"/api/saved-images/{image.pk}/").status_code == 404
    refused = api_client.post(
        "/api/workspaces/", {"display": "desktop", "apps": ["owner/my-ide:1"]}, format="json"
    )
    assert refused.status_code == 404


def test_a_saved_display_launches_as_the_display(engine, student):
    ws_id = running(student, apps=())
    sh(engine, ws_id, "display", "echo themed > /home/user/theme.txt")
    # The running display holds its VNC password file and the X cookie: neither may be saved.
    sh(engine, ws_id, "display", "test -e /dev/shm/lattice-vnc && test -s /tmp/.X11-unix/Xauthority")
    image = wait_for_image(save(student, ws_id, "display", "my-desktop").json()["id"])
    assert image.state == "ready" and image.kind == "display"
    config = assert_no_secrets_or_data(image.reference)
    assert "LATTICE_VNC_PASSWORD=" in config["Env"]  # emptied, not the workspace's secret
    again = running(student, display="owner/my-desktop:1", apps=())
    assert sh(engine, again, "display", "cat /home/user/theme.txt").strip() == "themed"


def test_two_saves_at_once_give_one_image_and_a_clear_409(engine, student):
    ws_id = running(student, apps=())
    answers = []

    def save_it():
        answers.append(save(student, ws_id, "display", "twice"))

    threads = [threading.Thread(target=save_it) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    codes = sorted(a.status_code for a in answers)
    if codes == [202, 202]:
        # Legitimate only when the first save had ended before the second was
        # claimed (a slow thread): the guard holds while a save is "saving".
        first, second = sorted(
            (wait_for_image(a.json()["id"]) for a in answers), key=lambda image: image.version
        )
        assert first.built is not None and first.built < second.created, (
            "two saves of one container were under way at once",
            first.built,
            second.created,
        )
        # Two versions, never one tag written twice.
        assert (first.version, second.version) == (1, 2) and first.reference != second.reference
    else:
        assert codes == [202, 409], codes
    for answer in answers:
        if answer.status_code == 202:
            assert wait_for_image(answer.json()["id"]).state == "ready"
        else:
            assert "being saved already" in answer.json()["detail"]
    # Whatever was saved is whole: it launches.
    slug = next(a.json()["slug"] for a in answers if a.status_code == 202)
    assert wait_for_state(running(student, display=slug, apps=()), {"running"}).state == "running"


def test_an_image_in_use_cannot_be_deleted_and_a_free_one_can(engine, student):
    ws_id = running(student, apps=())
    image = wait_for_image(save(student, ws_id, "display", "short-lived").json()["id"])
    user_ws = running(student, display=image.slug, apps=())
    assert student.delete(f"/api/saved-images/{image.pk}/").status_code == 409
    assert student.delete(f"/api/workspaces/{user_ws}/").status_code == 202
    wait_until_gone(user_ws)
    assert student.delete(f"/api/saved-images/{image.pk}/").status_code == 204
    assert not Image.objects.filter(pk=image.pk).exists()
    assert not image_exists(image.reference)
