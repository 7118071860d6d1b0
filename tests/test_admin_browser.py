"""An admin adds an environment by uploading a build context, watches the build
log, sees a broken build's failing step, and publishes a student's saved image
from the review queue."""

import io
import subprocess
import tarfile

import pytest
from django.conf import settings

from tests.conftest import screenshot
from tests.test_pages_browser import login
from workspaces.models import Image, PublishRequest

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser, pytest.mark.docker]


def context_file(tmp_path, name: str, dockerfile: bytes) -> str:
    path = tmp_path / name
    with tarfile.open(path, "w:gz") as archive:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        archive.addfile(info, io.BytesIO(dockerfile))
    return str(path)


GOOD = (
    b'FROM lattice/base:latest\nLABEL lattice.kind=app lattice.title="Physics lab" lattice.icon="\xf0\x9f\xa7\xaa"\n'
    b"RUN sleep 3\nRUN echo ready > /home/user/lab.txt\n"
)
BROKEN = b"FROM lattice/base:latest\nLABEL lattice.kind=app\nRUN echo compiling && exit 7\n"


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
        size=602_000_000,
        added_size=12_345_678,
        changes={
            "summary": {"/home/user": {"added": 3, "changed": 1, "deleted": 0}},
            "total": 4,
            "sample": [],
        },
    )
    PublishRequest.objects.create(image=saved, requested_by=student, note="My notes setup, for everyone")
    prefix = settings.LATTICE_ENGINE_PREFIX
    try:
        login(page, live_server_url, "root-admin")
        page.wait_for_url(f"{live_server_url}/manage/")
        page.wait_for_selector("#live-indicator.on")
        desktop_row = page.inner_text("tr[data-slug=desktop]")
        assert "Display" in desktop_row and "0 running" in desktop_row and "processes" in desktop_row
        screenshot(page, "admin-catalog")

        # A broken build: the failing step, in red, and the log up to it; nothing is added.
        page.click(".tab[data-tab=build]")
        page.set_input_files("input[name=context]", context_file(tmp_path, "broken.tar.gz", BROKEN))
        page.fill("#add-form input[name=slug]", "broken-lab")
        page.click("#add-submit")
        page.wait_for_selector("#add-form .progress.failed", timeout=120000)
        step = page.inner_text("#add-form .step")
        assert "step 3/3 (RUN echo compiling && exit 7)" in step and "non-zero code: 7" in step
        assert "compiling" in page.inner_text("#build-log")
        assert page.locator("#add-form .progress.done").count() == 0
        assert not page.is_disabled("#add-submit")
        screenshot(page, "admin-build-failed")

        # A good one: the bar is not green while the build runs, only once it is done.
        page.set_input_files("input[name=context]", context_file(tmp_path, "lab.tar.gz", GOOD))
        page.fill("#add-form input[name=slug]", "physics-lab")
        page.click("#add-submit")
        page.wait_for_function(
            "() => document.querySelector('#build-log').textContent.includes('Step 3/4 : RUN sleep 3')",
            timeout=120000,
        )
        assert page.locator("#add-form .progress.done").count() == 0
        assert page.is_disabled("#add-submit")
        assert "Step 1/4 : FROM lattice/base:latest" in page.inner_text("#build-log")  # nothing lost
        page.wait_for_selector("#add-form .progress.done", timeout=120000)
        assert "is in the catalog" in page.inner_text("#add-form .step")
        screenshot(page, "admin-build-log")
        page.wait_for_selector("tr[data-slug=physics-lab]", timeout=30000)  # the page reloads with the entry
        row = page.inner_text("tr[data-slug=physics-lab]")
        assert "Physics lab" in row and "🧪" in row and "built from the upload lab.tar.gz" in row
        assert Image.objects.get(slug="physics-lab").reference == f"{prefix}/physics-lab:latest"

        # After the reload, both jobs are listed with their logs; the failed one names its step.
        jobs = page.inner_text("#jobs")
        assert "Build of broken-lab" in jobs and "The build failed at step 3/3" in jobs
        assert "Build of physics-lab" in jobs
        assert not Image.objects.filter(slug="broken-lab").exists()

        review = page.locator("[data-review]").first
        assert "My notes setup" in review.inner_text()
        assert "/home/user" in review.inner_text()
        screenshot(page, "admin-review-queue")
        review.locator("input[name=slug]").fill("eve-notes")
        review.locator("button", has_text="Approve").click()
        page.wait_for_selector("tr[data-slug=eve-notes]", timeout=30000)
        assert PublishRequest.objects.get().state == "approved"
        assert Image.objects.get(slug="eve-notes").reference == f"{prefix}/eve-notes:latest"
        screenshot(page, "admin-published")
    finally:
        subprocess.run(
            ["docker", "rmi", "-f", f"{prefix}/physics-lab:latest", f"{prefix}/eve-notes:latest"],
            capture_output=True,
        )
