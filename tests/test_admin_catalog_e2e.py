"""The admin catalog on the real engine and worker: every way of adding an
environment, the review flow, limits applied on the next launch, delete safety."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile

import pytest

from tests.e2e import containers_of, docker, engine_id, inspect, wait_for_job, wait_for_state
from tests.registry import local_registry, push
from workspaces.models import Image, PublishRequest

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.docker]


def tar_context(dockerfile: str, **files: str) -> io.BytesIO:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        for name, content in {"Dockerfile": dockerfile, **files}.items():
            data = content.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    out.seek(0)
    out.name = "context.tar.gz"
    return out


def remove_image(reference: str) -> None:
    subprocess.run(["docker", "rmi", "-f", reference], capture_output=True)


@pytest.fixture
def admin(api_client, admin_user):
    api_client.force_authenticate(admin_user)
    return api_client


def test_add_an_image_the_engine_has(engine, admin):
    reference = "latticetest/tool:1"
    dockerfile = (
        "FROM lattice/base:latest\nLABEL lattice.kind=app lattice.title=Tool lattice.description=A_tool\n"
    )
    subprocess.run(
        ["docker", "build", "-q", "-t", reference, "-"],
        input=dockerfile,
        text=True,
        check=True,
        capture_output=True,
    )
    try:
        listed = [i["reference"] for i in admin.get("/api/admin/images/engine/").json()]
        assert reference in listed and "lattice/desktop:latest" not in listed  # already in the catalog
        response = admin.post("/api/admin/images/", {"reference": reference, "slug": "tool"}, format="json")
        assert response.status_code == 201, response.json()
        body = response.json()
        assert (body["kind"], body["title"], body["description"]) == ("app", "Tool", "A_tool")
        assert body["size"] > 0
        missing = admin.post(
            "/api/admin/images/", {"reference": "latticetest/nope:1", "slug": "nope"}, format="json"
        )
        assert missing.status_code == 400 and "not on this engine" in missing.json()["detail"]
    finally:
        remove_image(reference)


def test_build_from_a_folder_of_images_streams_its_log(engine, admin):
    response = admin.post(
        "/api/admin/images/build/", {"slug": "ide-copy", "folder": "ide", "title": "IDE copy"}
    )
    assert response.status_code == 202, response.json()
    job = wait_for_job(response.json()["id"])
    try:
        assert job.state == "done", (job.message, job.log[-2000:])
        assert "Step 1/" in job.log
        image = Image.objects.get(slug="ide-copy")
        assert (
            image.kind == "app" and image.title == "IDE copy" and image.reference == "lattice/ide-copy:latest"
        )
        assert "images/ide" in image.origin
    finally:
        remove_image("lattice/ide-copy:latest")


def test_build_an_uploaded_context_and_a_broken_one(engine, admin):
    good = tar_context(
        "FROM lattice/base:latest\nLABEL lattice.kind=app lattice.title=Hello\n"
        "COPY hello.txt /home/user/hello.txt\n",
        **{"hello.txt": "hi"},
    )
    response = admin.post("/api/admin/images/build/", {"slug": "hello", "context": good}, format="multipart")
    assert response.status_code == 202, response.json()
    try:
        job = wait_for_job(response.json()["id"])
        assert job.state == "done", (job.message, job.log)
        assert Image.objects.get(slug="hello").title == "Hello"

        broken = tar_context(
            "FROM lattice/base:latest\nLABEL lattice.kind=app\nRUN echo about to fail && exit 3\n"
        )
        response = admin.post(
            "/api/admin/images/build/", {"slug": "broken", "context": broken}, format="multipart"
        )
        job = wait_for_job(response.json()["id"])
        assert job.state == "failed"
        assert "step 3/3 (RUN echo about to fail && exit 3)" in job.message
        assert "non-zero code: 3" in job.message
        assert "about to fail" in job.log
        assert not Image.objects.filter(slug="broken").exists()
        assert (
            subprocess.run(
                ["docker", "image", "inspect", "lattice/broken:latest"], capture_output=True
            ).returncode
            != 0
        )

        not_a_context = io.BytesIO(b"just text")
        not_a_context.name = "notes.zip"
        refused = admin.post(
            "/api/admin/images/build/", {"slug": "junk", "context": not_a_context}, format="multipart"
        )
        assert refused.status_code == 400 and "Cannot read notes.zip" in refused.json()["detail"]
    finally:
        remove_image("lattice/hello:latest")


def test_pull_from_a_local_registry_with_progress(engine, admin, settings):
    with local_registry() as registry:
        subprocess.run(
            ["docker", "build", "-q", "-t", "latticetest/pushed:1", "-"],
            check=True,
            capture_output=True,
            text=True,
            input="FROM lattice/base:latest\nLABEL lattice.kind=app lattice.title=Pushed\n",
        )
        push("latticetest/pushed:1", f"{registry}/course/pushed:1")
        remove_image("latticetest/pushed:1")
        settings.LATTICE_REGISTRY = registry
        response = admin.post(
            "/api/admin/images/pull/", {"slug": "pushed", "reference": "course/pushed:1"}, format="json"
        )
        assert response.status_code == 202, response.json()
        job = wait_for_job(response.json()["id"])
        try:
            assert job.state == "done", job.message
            image = Image.objects.get(slug="pushed")
            assert image.reference == f"{registry}/course/pushed:1" and image.title == "Pushed"
            missing = admin.post(
                "/api/admin/images/pull/", {"slug": "ghost", "reference": "course/ghost:9"}, format="json"
            )
            failed = wait_for_job(missing.json()["id"])
            assert failed.state == "failed" and not Image.objects.filter(slug="ghost").exists()
        finally:
            remove_image(f"{registry}/course/pushed:1")


def test_review_publish_and_launch(engine, api_client, admin_user, owner, teammate):
    api_client.force_authenticate(owner)
    ws = api_client.post("/api/workspaces/", {"display": "desktop", "apps": []}, format="json").json()["id"]
    assert wait_for_state(ws, {"running", "failed"}).state == "running"
    code, _ = engine.exec(engine_id(ws), "display", ["sh", "-c", "echo shared > /home/user/for-everyone.txt"])
    assert code == 0
    saved_id = api_client.post(
        f"/api/workspaces/{ws}/containers/display/commit/", {"name": "nice-desk"}, format="json"
    ).json()["id"]
    from tests.test_saving_e2e import wait_for_image

    assert wait_for_image(saved_id).state == "ready"
    assert (
        api_client.post(
            f"/api/saved-images/{saved_id}/publish/", {"note": "useful"}, format="json"
        ).status_code
        == 201
    )

    api_client.force_authenticate(admin_user)
    review = api_client.get("/api/admin/reviews/").json()[0]
    assert review["image"]["parent"] == "desktop"
    assert "/home/user" in review["image"]["changes"]
    approved = api_client.post(
        f"/api/admin/reviews/{review['id']}/approve/", {"slug": "nice-desk"}, format="json"
    )
    assert approved.status_code == 201, approved.json()
    assert PublishRequest.objects.get().state == "approved"
    try:
        api_client.force_authenticate(teammate)
        assert "nice-desk" in {i["slug"] for i in api_client.get("/api/images/").json()}
        theirs = api_client.post(
            "/api/workspaces/", {"display": "nice-desk", "apps": []}, format="json"
        ).json()["id"]
        assert wait_for_state(theirs, {"running", "failed"}).state == "running"
        code, out = engine.exec(engine_id(theirs), "display", ["cat", "/home/user/for-everyone.txt"])
        assert out.decode().strip() == "shared"
    finally:
        for workspace_id in engine.list_workspaces():
            engine.remove(workspace_id)
        remove_image("lattice/nice-desk:latest")


def test_limits_edited_by_an_admin_apply_on_the_next_launch(engine, api_client, admin_user, owner):
    ide = Image.objects.get(slug="ide")
    api_client.force_authenticate(admin_user)
    response = api_client.patch(
        f"/api/admin/images/{ide.pk}/", {"mem_limit": "384m", "cpus": 0.5, "pids_limit": 200}, format="json"
    )
    assert response.status_code == 200, response.json()
    api_client.force_authenticate(owner)
    ws = api_client.post("/api/workspaces/", {"display": "desktop", "apps": ["ide"]}, format="json").json()[
        "id"
    ]
    assert wait_for_state(ws, {"running", "failed"}).state == "running"
    host = inspect(next(n for n in containers_of(engine_id(ws)) if n.endswith("-ide")))["HostConfig"]
    assert host["Memory"] == 384 * 1024**2
    assert host["NanoCpus"] == 500_000_000
    assert host["PidsLimit"] == 200


def test_delete_keeps_an_engine_image_another_entry_needs(engine, admin):
    desktop = Image.objects.get(slug="desktop")
    twin = admin.post(
        "/api/admin/images/", {"reference": desktop.reference, "slug": "desk-twin"}, format="json"
    )
    assert twin.status_code == 201
    assert admin.delete(f"/api/admin/images/{twin.json()['id']}/").status_code == 204
    assert json.loads(docker("image", "inspect", desktop.reference))  # still there: "desktop" uses it
