"""An admin adds an environment by uploading a build context, watches the build
log, and publishes a student's saved image from the review queue."""

import io
import subprocess
import tarfile

import pytest

from tests.conftest import screenshot
from tests.test_pages_browser import login
from workspaces.models import Image, PublishRequest

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser, pytest.mark.docker]


def context_file(tmp_path) -> str:
    path = tmp_path / "lab.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        dockerfile = (
            b'FROM lattice/base:latest\nLABEL lattice.kind=app lattice.title="Physics lab"\n'
            b"RUN echo ready > /home/user/lab.txt\n"
        )
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        archive.addfile(info, io.BytesIO(dockerfile))
    return str(path)


def test_admin_adds_and_publishes(page, live_server_url, make_user, engine, tmp_path):
    make_user("root-admin", role="admin")
    student = make_user("eve")
    saved = Image.objects.create(
        slug="eve/notes:1",
        reference="lattice/desktop:latest",
        kind="display",
        title="Eve's desktop",
        owner=student,
        name="notes",
        version=1,
        parent=Image.objects.get(slug="desktop"),
        added_size=12_345_678,
        changes={
            "summary": {"/home/user": {"added": 3, "changed": 1, "deleted": 0}},
            "total": 4,
            "sample": [],
        },
    )
    PublishRequest.objects.create(image=saved, requested_by=student, note="My notes setup, for everyone")
    try:
        login(page, live_server_url, "root-admin")
        page.wait_for_url(f"{live_server_url}/manage/")
        page.wait_for_selector("#live-indicator.on")
        screenshot(page, "admin-catalog")

        page.click(".tab[data-tab=build]")
        page.set_input_files("input[name=context]", context_file(tmp_path))
        page.fill("#add-form input[name=slug]", "physics-lab")
        page.click("#add-submit")
        page.wait_for_selector("#build-log:not([hidden])", timeout=30000)
        page.wait_for_function(
            "() => document.querySelector('#build-log').textContent.includes('Step 3/3')", timeout=120000
        )
        page.wait_for_selector("#add-form .progress.done", timeout=120000)
        screenshot(page, "admin-build-log")
        page.wait_for_selector("tr[data-slug=physics-lab]", timeout=30000)  # the page reloads with the entry
        assert "Physics lab" in page.inner_text("tr[data-slug=physics-lab]")

        review = page.locator("[data-review]").first
        assert "My notes setup" in review.inner_text()
        assert "/home/user" in review.inner_text()
        screenshot(page, "admin-review-queue")
        review.locator("input[name=slug]").fill("eve-notes")
        review.locator("button", has_text="Approve").click()
        page.wait_for_selector("tr[data-slug=eve-notes]", timeout=30000)
        assert PublishRequest.objects.get().state == "approved"
        screenshot(page, "admin-published")
    finally:
        subprocess.run(
            ["docker", "rmi", "-f", "lattice/physics-lab:latest", "lattice/eve-notes:latest"],
            capture_output=True,
        )
