"""The admin catalog on the real engine and worker: every way of adding an
environment, the review flow, limits applied on the next launch, delete safety."""

from __future__ import annotations

import asyncio
import io
import subprocess
import tarfile
import threading
from contextlib import contextmanager

import pytest
from django.conf import settings

from tests.support.e2e import containers_of, docker_build, engine_id, inspect, wait_for_job, wait_for_state
from tests.support.registry import local_registry, push
from workspaces import tasks
from workspaces.lib.events import user_group
from workspaces.models import Image, PublishRequest, Workspace

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.docker]


def ours(slug: str) -> str:
    """Where admin-built and published entries live: under this run's engine prefix."""
    return f"{settings.LATTICE_ENGINE_PREFIX}/{slug}:latest"


def scratch(slug: str, job_id: int) -> str:
    """The tag a build works under until its entry exists."""
    return f"{settings.LATTICE_ENGINE_PREFIX}/{slug}:build-{job_id}"


def image_exists(reference: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", reference], capture_output=True).returncode == 0


@contextmanager
def recorded_events(user_id: int):
    """Every event the worker publishes to this user while the block runs, through the real Redis layer."""
    from channels.layers import channel_layers

    received: list[dict] = []
    ready, stop = threading.Event(), threading.Event()

    async def listen() -> None:
        layer = channel_layers.make_backend("default")  # its own, for this thread's event loop
        channel = await layer.new_channel()
        await layer.group_add(user_group(user_id), channel)
        ready.set()
        try:
            while not stop.is_set():
                try:
                    message = await asyncio.wait_for(layer.receive(channel), timeout=0.3)
                except TimeoutError:
                    continue
                received.append(message["event"])
        finally:
            await layer.group_discard(user_group(user_id), channel)

    thread = threading.Thread(target=asyncio.run, args=(listen(),), daemon=True)
    thread.start()
    assert ready.wait(10), "could not subscribe to the channel layer"
    try:
        yield received
    finally:
        stop.set()
        thread.join(10)


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
    reference = f"{settings.LATTICE_ENGINE_PREFIX}/tool:1"
    docker_build(
        reference,
        "FROM lattice/base:latest\n"
        "LABEL lattice.kind=display lattice.title=Tool lattice.description=A_tool lattice.kiosk=1\n",
    )
    try:
        listed = [i["reference"] for i in admin.get("/api/admin/images/engine/").json()]
        assert reference in listed and "lattice/desktop:latest" not in listed  # already in the catalog
        response = admin.post("/api/admin/images/", {"reference": reference, "slug": "tool"}, format="json")
        assert response.status_code == 201, response.json()
        body = response.json()
        assert (body["kind"], body["title"], body["description"], body["kiosk"]) == (
            "display",
            "Tool",
            "A_tool",
            True,
        )
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
        assert image.kind == "app" and image.title == "IDE copy" and image.reference == ours("ide-copy")
        assert "images/ide" in image.origin
        assert image_exists(ours("ide-copy")) and not image_exists(scratch("ide-copy", job.pk))
    finally:
        remove_image(ours("ide-copy"))


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
        assert not image_exists(ours("broken")) and not image_exists(scratch("broken", job.pk))

        not_a_context = io.BytesIO(b"just text")
        not_a_context.name = "notes.zip"
        refused = admin.post(
            "/api/admin/images/build/", {"slug": "junk", "context": not_a_context}, format="multipart"
        )
        assert refused.status_code == 400 and "Cannot read notes.zip" in refused.json()["detail"]
    finally:
        remove_image(ours("hello"))


def test_pull_from_a_local_registry_with_progress(engine, admin, admin_user, settings):
    source = f"{settings.LATTICE_ENGINE_PREFIX}/pushed-src:1"
    with local_registry() as registry:
        # A layer of random bytes: the pull has something to download, and reports it as it goes.
        docker_build(
            source,
            "FROM lattice/base:latest\nLABEL lattice.kind=app lattice.title=Pushed\n"
            "RUN head -c 48000000 /dev/urandom > /home/user/blob\n",
        )
        push(source, f"{registry}/course/pushed:1")
        remove_image(source)
        settings.LATTICE_REGISTRY = registry
        with recorded_events(admin_user.pk) as events:
            response = admin.post(
                "/api/admin/images/pull/", {"slug": "pushed", "reference": "course/pushed:1"}, format="json"
            )
            assert response.status_code == 202, response.json()
            job = wait_for_job(response.json()["id"])
        try:
            assert job.state == "done", job.message
            image = Image.objects.get(slug="pushed")
            assert image.reference == f"{registry}/course/pushed:1" and image.title == "Pushed"
            seen = [e["progress"] for e in events if e.get("type") == "job" and e["id"] == job.pk]
            assert any(0 < p < 100 for p in seen), seen
            assert seen == sorted(seen) and seen[-1] == 100, seen
            assert any("Downloading" in e["message"] for e in events if e.get("type") == "job")
            missing = admin.post(
                "/api/admin/images/pull/", {"slug": "ghost", "reference": "course/ghost:9"}, format="json"
            )
            failed = wait_for_job(missing.json()["id"])
            assert failed.state == "failed" and not Image.objects.filter(slug="ghost").exists()
            assert "course/ghost:9" in failed.message
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
    from tests.test_saved_images_e2e import wait_for_image

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
    assert approved.json()["reference"] == ours("nice-desk")
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
        remove_image(ours("nice-desk"))


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


def test_disable_keeps_running_workspaces_and_refuses_new_launches(engine, api_client, admin_user, owner):
    api_client.force_authenticate(owner)
    ws = api_client.post("/api/workspaces/", {"display": "desktop", "apps": ["ide"]}, format="json").json()[
        "id"
    ]
    assert wait_for_state(ws, {"running", "failed"}).state == "running"
    ide = Image.objects.get(slug="ide")
    api_client.force_authenticate(admin_user)
    assert (
        api_client.patch(f"/api/admin/images/{ide.pk}/", {"enabled": False}, format="json").status_code == 200
    )
    tasks.reconcile()  # what beat runs: it must not take the workspace for a broken one
    api_client.force_authenticate(owner)
    refused = api_client.post("/api/workspaces/", {"display": "desktop", "apps": ["ide"]}, format="json")
    assert refused.status_code == 403
    assert Workspace.objects.filter(owner=owner).count() == 1
    assert Workspace.objects.get(pk=ws).state == "running"
    assert engine.poll(engine_id(ws)) == "running"
    app = next(n for n in containers_of(engine_id(ws)) if n.endswith("-ide"))
    assert inspect(app)["State"]["Running"]
    code, out = engine.exec(engine_id(ws), "ide", ["echo", "still here"])
    assert (code, out.decode().strip()) == (0, "still here")


def test_delete_removes_an_unused_engine_image_and_keeps_a_shared_one(engine, admin):
    reference = f"{settings.LATTICE_ENGINE_PREFIX}/doomed:1"
    docker_build(reference, "FROM lattice/base:latest\nLABEL lattice.kind=app lattice.title=Doomed\n")
    try:
        one = admin.post("/api/admin/images/", {"reference": reference, "slug": "doomed"}, format="json")
        twin = admin.post(
            "/api/admin/images/", {"reference": reference, "slug": "doomed-twin"}, format="json"
        )
        assert one.status_code == twin.status_code == 201
        assert admin.delete(f"/api/admin/images/{twin.json()['id']}/").status_code == 204
        assert image_exists(reference)  # "doomed" still needs it
        assert admin.delete(f"/api/admin/images/{one.json()['id']}/").status_code == 204
        assert not image_exists(reference)
        assert image_exists("lattice/base:latest")  # its parent layers' own tag is untouched
    finally:
        remove_image(reference)
