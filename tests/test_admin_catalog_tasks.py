"""Builds, pulls, approvals and deletes with fake engines that subclass the real one:
whatever goes wrong, jobs end failed with a reason, and no engine tag is overwritten or left over."""

from __future__ import annotations

import io
import tarfile
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.utils import timezone

from tests.support import catalog_fakes
from tests.support.catalog_fakes import BrokenStep, CrashingBuild, CrashingPull, RefusingPull
from tests.support.saved_images_fakes import make_saved_image
from workspaces import tasks
from workspaces.engine.base import EngineError
from workspaces.models import Broadcast, Classroom, Image, Job, PublishRequest, Workspace
from workspaces.services import admin_catalog, jobs

pytestmark = pytest.mark.django_db


@pytest.fixture
def use_engine(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    return lambda engine_class=catalog_fakes.FakeCatalogEngine: catalog_fakes.use(settings, engine_class)


@pytest.fixture
def engine(use_engine):
    return use_engine()


@pytest.fixture
def events(monkeypatch):
    sent: list[dict] = []
    monkeypatch.setattr(jobs, "publish", lambda user_id, event: sent.append(event))
    monkeypatch.setattr(tasks.admin_catalog, "publish", lambda user_id, event: sent.append(event))
    return sent


@pytest.fixture
def admin(api_client, admin_user):
    api_client.force_authenticate(admin_user)
    return api_client


@pytest.fixture
def desktop(db):
    return Image.objects.create(
        slug="desktop", reference="lattice/desktop:latest", kind="display", title="Desktop"
    )


def context(dockerfile: bytes = b"FROM lattice/base:latest\n") -> io.BytesIO:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        archive.addfile(info, io.BytesIO(dockerfile))
    out.seek(0)
    out.name = "lab.tar.gz"
    return out


def queue_build(admin, **data) -> Job:
    response = admin.post("/api/admin/images/build/", data, format="multipart")
    assert response.status_code == 202, response.json()
    return Job.objects.get(pk=response.json()["id"])


def target(settings, slug: str) -> str:
    return f"{settings.LATTICE_ENGINE_PREFIX}/{slug}:latest"


# --- builds ---------------------------------------------------------------------------


def test_a_build_becomes_an_entry_under_the_engine_prefix(admin, engine, events, settings):
    settings.LATTICE_BUILD_MEMORY, settings.LATTICE_BUILD_CPUS, settings.LATTICE_BUILD_TIMEOUT = "1g", 2, 600
    job = queue_build(admin, slug="lab", folder="ide", title="Lab")
    tasks.build_image(job.pk)
    job.refresh_from_db()
    assert job.state == "done", job.message
    image = Image.objects.get(slug="lab")
    assert image.reference == target(settings, "lab") != "lattice/lab:latest"
    assert (image.title, image.kind, image.size, image.origin) == (
        "Lab",
        "app",
        120 * 1024**2,
        "built from images/ide",
    )
    ((_, scratch, options),) = engine.called("build")
    assert scratch == f"{settings.LATTICE_ENGINE_PREFIX}/lab:build-{job.pk}"
    assert (options["memory"], options["cpus"], options["timeout"]) == ("1g", 2, 600)
    assert options["buildargs"] == {"BASE": "lattice/base:latest"}
    assert target(settings, "lab") in engine.tags and scratch not in engine.tags  # the scratch tag went
    assert "Step 3/3 : RUN make" in job.log
    # Each step moves the bar; the log lines are numbered for a page that follows late.
    logged = [e for e in events if e["type"] == "job-log"]
    assert len(logged) == 6 and [e["line"] for e in logged] == job.log.splitlines()
    assert [e["n"] for e in logged] == list(range(len(logged)))
    progress = [e["progress"] for e in events if e["type"] == "job"]
    assert progress == [3, 5, 35, 65, 100]


def test_a_folder_with_a_parent_is_built_on_it(admin, engine, events):
    # images/kiosk/PARENT says desktop, as scripts/build-images reads it.
    job = queue_build(admin, slug="exam", folder="kiosk")
    tasks.build_image(job.pk)
    assert Job.objects.get(pk=job.pk).state == "done"
    ((_, _, options),) = engine.called("build")
    assert options["buildargs"] == {"BASE": "lattice/desktop:latest"}


def test_an_upload_is_built_on_base(admin, engine, events):
    job = queue_build(admin, slug="lab", context=context())
    tasks.build_image(job.pk)
    assert engine.called("build")[0][2]["buildargs"] == {"BASE": "lattice/base:latest"}


def test_a_parent_that_is_no_folder_is_refused(admin, engine, tmp_path, monkeypatch):
    images = tmp_path / "images"
    for name in ("base", "lab"):
        (images / name).mkdir(parents=True)
        (images / name / "Dockerfile").write_text("FROM scratch\n")
    (images / "lab" / "PARENT").write_text("gone\n")
    monkeypatch.setattr(admin_catalog, "IMAGES_DIR", images)
    response = admin.post("/api/admin/images/build/", {"slug": "mylab", "folder": "lab"})
    assert response.status_code == 400 and "PARENT names 'gone'" in response.json()["detail"]
    assert not Job.objects.exists()


def test_an_uploaded_context_is_removed_after_the_build(admin, engine, events):
    job = queue_build(admin, slug="lab", context=context())
    assert jobs.input_path(job).exists()
    tasks.build_image(job.pk)
    assert Job.objects.get(pk=job.pk).state == "done"
    assert not jobs.input_path(job).exists()
    assert engine.called("build")[0][2]["size"] > 0


def test_any_crash_fails_the_build_with_its_log_and_removes_the_upload(admin, use_engine, events, settings):
    engine = use_engine(CrashingBuild)
    job = queue_build(admin, slug="lab", context=context())
    tasks.build_image(job.pk)
    job.refresh_from_db()
    assert job.state == "failed"
    assert job.message == "The build stopped unexpectedly (RuntimeError: the disk is on fire); try again."
    assert "Step 2/3 : LABEL lattice.kind=app" in job.log and job.log.endswith(f"✖ {job.message}")
    assert job.result["error"] == job.message and job.result["fields"]["slug"] == "lab"
    assert not jobs.input_path(job).exists()
    assert not Image.objects.filter(slug="lab").exists()
    assert not [t for t in engine.tags if "/lab:" in t]
    assert events[-1]["type"] == "job" and events[-1]["state"] == "failed"


def test_a_broken_step_is_named_and_nothing_is_added(admin, use_engine, events):
    use_engine(BrokenStep)
    job = queue_build(admin, slug="lab", folder="ide")
    tasks.build_image(job.pk)
    job.refresh_from_db()
    assert job.state == "failed"
    assert job.message.startswith("The build failed at step 3/3 (RUN make): ")
    assert "make: *** No rule to make target" in job.log
    assert not Image.objects.filter(slug="lab").exists()


def test_an_entry_that_cannot_be_made_after_the_build_leaves_no_tag(admin, engine, events, settings):
    engine.build_labels = {"lattice.title": "No kind"}  # and the admin did not say either
    job = queue_build(admin, slug="lab", folder="ide")
    tasks.build_image(job.pk)
    job.refresh_from_db()
    assert job.state == "failed" and "display or an app" in job.message
    assert not [t for t in engine.tags if "/lab:" in t]


def test_a_name_taken_while_the_job_waited_is_refused_without_building(admin, engine, events, settings):
    job = queue_build(admin, slug="lab", folder="ide")
    engine.add(target(settings, "lab"), {"lattice.kind": "app"})  # someone tagged it meanwhile
    before = dict(engine.tags[target(settings, "lab")])
    tasks.build_image(job.pk)
    job.refresh_from_db()
    assert job.state == "failed" and "has an image" in job.message
    assert not engine.called("build") and not engine.called("tag")
    assert engine.tags[target(settings, "lab")] == before


def test_a_job_given_up_while_it_built_adds_nothing(admin, engine, events):
    job = queue_build(admin, slug="lab", folder="ide")
    engine.step = lambda index, step, log: Job.objects.filter(pk=job.pk).update(state="failed")
    tasks.build_image(job.pk)
    job.refresh_from_db()
    assert job.state == "failed" and not Image.objects.filter(slug="lab").exists()
    assert not [t for t in engine.tags if "/lab:" in t]


# --- names that are not ours --------------------------------------------------------------


@pytest.mark.parametrize("slug", ["base", "office", "u", "base-rootfs"])
def test_reserved_names_are_refused(admin, engine, slug):
    response = admin.post("/api/admin/images/build/", {"slug": slug, "folder": "ide"})
    assert response.status_code == 400
    assert "choose another slug" in response.json()["detail"]
    assert not Job.objects.exists()


def test_slugs_docker_cannot_name_are_refused(admin, engine):
    for slug in ("Lab", "lab-", "a..b", "-x", "x" * 65):
        assert admin.post("/api/admin/images/build/", {"slug": slug, "folder": "ide"}).status_code == 400


def test_a_tag_another_entry_or_the_engine_has_is_never_overwritten(admin, engine, settings, desktop):
    Image.objects.create(slug="other", reference=target(settings, "lab"), kind="app", title="Other")
    engine.add(target(settings, "tool"), {"lattice.kind": "app"})
    first = admin.post("/api/admin/images/build/", {"slug": "lab", "folder": "ide"})
    assert first.status_code == 400 and "'other' uses" in first.json()["detail"]
    second = admin.post("/api/admin/images/build/", {"slug": "tool", "folder": "ide"})
    assert second.status_code == 400 and "has an image" in second.json()["detail"]
    assert not Job.objects.exists() and not engine.called("tag")


# --- pulls ------------------------------------------------------------------------------


@pytest.fixture
def registry(settings):
    settings.LATTICE_REGISTRY = "127.0.0.1:5999"
    return settings.LATTICE_REGISTRY


def queue_pull(admin, **data) -> Job:
    response = admin.post("/api/admin/images/pull/", data, format="json")
    assert response.status_code == 202, response.json()
    return Job.objects.get(pk=response.json()["id"])


def test_a_pull_by_digest_keeps_the_digest(admin, engine, events, registry):
    digest = "sha256:" + "cd" * 32
    job = queue_pull(admin, slug="py", reference=f"course/python@{digest}")
    tasks.pull_image(job.pk)
    job.refresh_from_db()
    assert job.state == "done", job.message
    assert Image.objects.get(slug="py").reference == f"{registry}/course/python@{digest}"
    progress = [e["progress"] for e in events if e["type"] == "job"]
    assert progress == sorted(progress) and 40 in progress


def test_a_crash_in_a_pull_fails_the_job(admin, use_engine, events, registry):
    use_engine(CrashingPull)
    job = queue_pull(admin, slug="py", reference="course/python:3")
    tasks.pull_image(job.pk)
    job.refresh_from_db()
    assert job.state == "failed" and "KeyError" in job.message and not Image.objects.exists()


def test_a_refused_pull_fails_the_job_with_the_registry_word(admin, use_engine, events, registry):
    use_engine(RefusingPull)
    job = queue_pull(admin, slug="py", reference="course/python:3")
    tasks.pull_image(job.pk)
    job.refresh_from_db()
    assert job.state == "failed" and job.message.endswith("manifest unknown")


def test_a_pulled_tag_goes_again_when_no_entry_can_be_made(admin, engine, events, registry):
    engine.pull_labels = {}
    job = queue_pull(admin, slug="py", reference="course/python:3")
    tasks.pull_image(job.pk)
    assert Job.objects.get(pk=job.pk).state == "failed"
    assert f"{registry}/course/python:3" not in engine.tags
    # One the engine had before the pull stays.
    engine.add(f"{registry}/course/python:4")
    job = queue_pull(admin, slug="py", reference="course/python:4")
    tasks.pull_image(job.pk)
    assert Job.objects.get(pk=job.pk).state == "failed"
    assert f"{registry}/course/python:4" in engine.tags


def test_a_reference_an_entry_uses_is_not_pulled_again(admin, engine, registry):
    Image.objects.create(slug="py", reference=f"{registry}/course/python:3", kind="app", title="Py")
    response = admin.post(
        "/api/admin/images/pull/", {"slug": "py2", "reference": "course/python:3"}, format="json"
    )
    assert response.status_code == 400 and "'py' uses" in response.json()["detail"]


# --- adding from the engine -----------------------------------------------------------


def test_the_kiosk_label_decides_unless_the_admin_does(admin, engine):
    engine.add("school/quiz:1", {"lattice.kind": "display", "lattice.kiosk": "1"})
    quiz = admin.post("/api/admin/images/", {"reference": "school/quiz:1", "slug": "quiz"}, format="json")
    assert quiz.status_code == 201 and quiz.json()["kiosk"] is True
    plain = admin.post(
        "/api/admin/images/", {"reference": "school/quiz:1", "slug": "quiz2", "kiosk": False}, format="json"
    )
    assert plain.status_code == 201 and plain.json()["kiosk"] is False


def test_a_build_form_without_kiosk_leaves_it_to_the_label(admin, engine, events):
    engine.build_labels = {"lattice.kind": "display", "lattice.kiosk": "true"}
    job = queue_build(admin, slug="exam", folder="desktop")  # multipart: no kiosk field at all
    tasks.build_image(job.pk)
    assert Image.objects.get(slug="exam").kiosk is True


def test_a_users_saved_image_cannot_be_added_by_reference(admin, engine, settings):
    reference = f"{settings.LATTICE_ENGINE_PREFIX}/u/eve/notes:1"
    engine.add(reference, {"lattice.kind": "app"})
    response = admin.post("/api/admin/images/", {"reference": reference, "slug": "notes"}, format="json")
    assert response.status_code == 400 and "review queue" in response.json()["detail"]


def test_a_wrong_visibility_adds_nothing(admin, engine):
    engine.add("school/tool:1", {"lattice.kind": "app"})
    response = admin.post(
        "/api/admin/images/",
        {"reference": "school/tool:1", "slug": "tool", "visibility": "groups"},
        format="json",
    )
    assert response.status_code == 400 and not Image.objects.filter(slug="tool").exists()


# --- review ---------------------------------------------------------------------------


@pytest.fixture
def review(owner, desktop, engine, settings):
    reference = f"{settings.LATTICE_ENGINE_PREFIX}/u/owner/notes:1"
    engine.add(reference, {"lattice.kind": "display"})
    saved = make_saved_image(owner, "notes", kind="display", parent=desktop, title="Notes")
    assert saved.reference == reference
    return PublishRequest.objects.create(image=saved, requested_by=owner)


def visible(api_client, user) -> set[str]:
    api_client.force_authenticate(user)
    return {i["slug"] for i in api_client.get("/api/images/").json()}


def test_approved_for_a_group_exactly_its_members_see_and_launch_it(
    api_client, admin_user, owner, teammate, stranger, teacher, review, engine, settings
):
    physics = Group.objects.create(name="physics")
    teammate.groups.add(physics)
    api_client.force_authenticate(admin_user)
    response = api_client.post(
        f"/api/admin/reviews/{review.pk}/approve/",
        {"slug": "notes", "visibility": "groups", "groups": [physics.pk]},
        format="json",
    )
    assert response.status_code == 201, response.json()
    assert response.json()["reference"] == target(settings, "notes")
    assert engine.tags[target(settings, "notes")]["id"] == engine.tags[review.image.reference]["id"]
    assert visible(api_client, teammate) == {"desktop", "notes"}
    assert visible(api_client, owner) == {"desktop", "owner/notes:1"}  # their own saved image, not the entry
    assert visible(api_client, stranger) == {"desktop"}
    assert visible(api_client, teacher) == {"desktop"}
    assert "notes" in visible(api_client, admin_user)
    api_client.force_authenticate(stranger)
    crafted = api_client.post("/api/workspaces/", {"display": "notes"}, format="json")
    assert crafted.status_code == 403 and not Workspace.objects.exists()
    review.refresh_from_db()
    assert review.state == "approved" and review.published.slug == "notes"


def test_approve_checks_visibility_before_touching_the_engine(admin, review, engine):
    response = admin.post(
        f"/api/admin/reviews/{review.pk}/approve/", {"slug": "notes", "visibility": "groups"}, format="json"
    )
    assert response.status_code == 400 and "at least one group" in response.json()["detail"]
    assert not engine.called("tag")
    assert PublishRequest.objects.get().state == "pending"


@pytest.mark.parametrize("slug", ["base", "desktop", "ide"])
def test_approve_never_takes_a_name_that_is_not_free(admin, review, engine, slug):
    response = admin.post(f"/api/admin/reviews/{review.pk}/approve/", {"slug": slug}, format="json")
    assert response.status_code == 400
    assert not engine.called("tag") and PublishRequest.objects.get().state == "pending"


def test_approve_refuses_a_tag_the_engine_has(admin, review, engine, settings):
    engine.add(target(settings, "notes"), {"lattice.kind": "app"})
    response = admin.post(f"/api/admin/reviews/{review.pk}/approve/", {"slug": "notes"}, format="json")
    assert response.status_code == 400 and "has an image" in response.json()["detail"]
    assert engine.tags[target(settings, "notes")]["labels"] == {"lattice.kind": "app"}


def test_approve_checks_the_engine_again_right_before_tagging(admin, review, engine, settings, monkeypatch):
    checked = admin_catalog.check_target

    def taken_meanwhile(slug):
        reference = checked(slug)
        engine.add(reference, {"lattice.kind": "app"})  # something else tags it after the check
        return reference

    monkeypatch.setattr(admin_catalog, "check_target", taken_meanwhile)
    response = admin.post(f"/api/admin/reviews/{review.pk}/approve/", {"slug": "notes"}, format="json")
    assert response.status_code == 400 and "has an image" in response.json()["detail"]
    assert not engine.called("tag") and engine.tags[target(settings, "notes")]["labels"] == {
        "lattice.kind": "app"
    }
    assert not Image.objects.filter(slug="notes").exists()
    assert PublishRequest.objects.get().state == "pending"


def test_an_approve_whose_tag_fails_leaves_no_entry(admin, review, engine):
    engine.fail["tag"] = EngineError("Tagging failed: no space left on device")
    response = admin.post(f"/api/admin/reviews/{review.pk}/approve/", {"slug": "notes"}, format="json")
    assert response.status_code == 400 and "no space left" in response.json()["detail"]
    assert not Image.objects.filter(slug="notes").exists()
    assert PublishRequest.objects.get().state == "pending"


def test_a_decided_request_is_a_conflict(admin, review, engine):
    assert (
        admin.post(f"/api/admin/reviews/{review.pk}/reject/", {"reason": "no"}, format="json").status_code
        == 200
    )
    again = admin.post(f"/api/admin/reviews/{review.pk}/approve/", {"slug": "notes"}, format="json")
    assert again.status_code == 409 and not engine.called("tag")


# --- delete -----------------------------------------------------------------------------


def test_a_broadcast_display_cannot_be_deleted_and_keeps_its_engine_image(admin, engine, desktop, teacher):
    room = Classroom.objects.create(name="Physics")
    Broadcast.objects.create(classroom=room, teacher=teacher, display=desktop, state="ended")
    engine.add(desktop.reference, {"lattice.kind": "display"})
    response = admin.delete(f"/api/admin/images/{desktop.pk}/")
    assert response.status_code == 409
    assert (
        "display of 1 broadcast" in response.json()["detail"]
        and "Disable it instead" in response.json()["detail"]
    )
    assert Image.objects.filter(pk=desktop.pk).exists()
    assert not engine.called("remove_image") and desktop.reference in engine.tags


def test_a_parent_of_saved_images_cannot_be_deleted(admin, engine, desktop, owner, stranger):
    for user in (owner, stranger):
        make_saved_image(user, "d", kind="display", parent=desktop)
    response = admin.delete(f"/api/admin/images/{desktop.pk}/")
    assert response.status_code == 409
    assert "2 images were saved from 'desktop'" in response.json()["detail"]
    assert Image.objects.filter(parent=desktop).count() == 2


def test_a_stopped_workspace_blocks_delete_and_the_page_counts_it(
    admin, engine, desktop, owner, client, admin_user
):
    Workspace.objects.create(owner=owner, display=desktop, state="stopped")
    listed = next(i for i in admin.get("/api/admin/images/").json() if i["slug"] == "desktop")
    assert listed["in_use"] == 0
    assert (
        listed["usage"]["workspaces"] == 1 and "1 workspace (0 running)" in listed["usage"]["delete_blocked"]
    )
    response = admin.delete(f"/api/admin/images/{desktop.pk}/")
    assert response.status_code == 409 and "1 workspace (0 running)" in response.json()["detail"]
    client.force_login(admin_user)
    page = client.get("/manage/").content.decode()
    assert "1 workspace in all" in page and 'title="&#x27;desktop&#x27; is used by 1 workspace' in page
    edit = client.get(f"/manage/images/{desktop.pk}/").content.decode()
    assert "0 running, 1 workspace in all" in edit


def test_delete_removes_the_engine_image_only_when_no_entry_shares_it(admin, engine, settings):
    engine.add("school/tool:1", {"lattice.kind": "app"})
    one = Image.objects.create(slug="tool", reference="school/tool:1", kind="app", title="Tool")
    two = Image.objects.create(slug="tool-twin", reference="school/tool:1", kind="app", title="Twin")
    assert admin.delete(f"/api/admin/images/{two.pk}/").status_code == 204
    assert not engine.called("remove_image") and "school/tool:1" in engine.tags
    assert admin.delete(f"/api/admin/images/{one.pk}/").status_code == 204
    assert engine.called("remove_image") == [("remove_image", "school/tool:1", {})]
    assert "school/tool:1" not in engine.tags and not Image.objects.exists()


def test_an_engine_that_keeps_the_image_is_reported(admin, engine):
    engine.fail["remove_image"] = EngineError("The image school/tool:1 is still used by a container.")
    tool = Image.objects.create(slug="tool", reference="school/tool:1", kind="app", title="Tool")
    response = admin.delete(f"/api/admin/images/{tool.pk}/")
    assert response.status_code == 200 and "still used by a container" in response.json()["detail"]
    assert not Image.objects.exists()


# --- jobs nobody finishes -----------------------------------------------------------------


def test_stale_jobs_are_failed_and_their_inputs_removed(admin_user, engine, events, settings):
    old = timezone.now() - timedelta(hours=2)
    stuck = [Job.objects.create(owner=admin_user, kind="build", state=s) for s in ("running", "queued")]
    fresh = Job.objects.create(owner=admin_user, kind="build", state="running")
    done = Job.objects.create(owner=admin_user, kind="build", state="done", message="Built")
    Job.objects.filter(pk__in=[j.pk for j in [*stuck, done]]).update(created=old)
    for job in [*stuck, fresh]:
        jobs.input_path(job).write_bytes(b"context")
    assert jobs.fail_stale(3600) == 2
    for job in stuck:
        job.refresh_from_db()
        assert job.state == "failed" and "Given up: no result after 60 minutes" in job.message
    assert Job.objects.get(pk=fresh.pk).state == "running" and Job.objects.get(pk=done.pk).message == "Built"
    # Inputs of jobs that are over go once they are older than a request could take.
    import os

    for job in stuck:
        os.utime(jobs.input_path(job), (old.timestamp(), old.timestamp()))
    jobs.fail_stale(3600)
    assert [jobs.input_path(j).exists() for j in [*stuck, fresh]] == [False, False, True]
    assert {e["id"] for e in events if e.get("state") == "failed"} == {j.pk for j in stuck}
    # A late finish of a given-up job changes nothing.
    assert jobs.finish(stuck[0], "done", "Built after all") is False
    assert Job.objects.get(pk=stuck[0].pk).state == "failed"
    # Nor does a late progress line: the row keeps why it was given up, the page hears nothing.
    heard = len(events)
    jobs.report(stuck[1], 50, "Step 2/3 : RUN make")
    assert Job.objects.get(pk=stuck[1].pk).message.startswith("Given up") and len(events) == heard


def test_reconcile_fails_stale_jobs(admin_user, engine, events, settings):
    settings.LATTICE_JOB_STALE_SECONDS = 60
    job = Job.objects.create(owner=admin_user, kind="pull", state="running")
    Job.objects.filter(pk=job.pk).update(created=timezone.now() - timedelta(minutes=5))
    assert tasks.reconcile()["stale_jobs"] == 1
    assert Job.objects.get(pk=job.pk).state == "failed"


def test_the_job_api_gives_the_log_to_its_owner_only(api_client, admin_user, make_user):
    job = Job.objects.create(owner=admin_user, kind="build", log="Step 1/1 : FROM x")
    api_client.force_authenticate(admin_user)
    assert api_client.get(f"/api/jobs/{job.pk}/").json()["log"] == "Step 1/1 : FROM x"
    api_client.force_authenticate(make_user("other-admin", role="admin"))
    assert api_client.get(f"/api/jobs/{job.pk}/").status_code == 404


def test_the_page_shows_a_failed_build_with_its_step_and_log(client, admin_user, desktop):
    Job.objects.create(
        owner=admin_user,
        kind="build",
        state="failed",
        message="The build failed at step 3/3 (RUN make): returned a non-zero code: 2",
        result={"fields": {"slug": "lab"}, "folder": "", "upload": "lab.tar.gz"},
        log="Step 1/3 : FROM lattice/base:latest\nStep 3/3 : RUN make\nmake: *** No rule",
    )
    client.force_login(admin_user)
    page = client.get("/manage/").content.decode()
    assert "Build of lab" in page and "from lab.tar.gz" in page
    assert "The build failed at step 3/3 (RUN make)" in page
    assert "make: *** No rule" in page
