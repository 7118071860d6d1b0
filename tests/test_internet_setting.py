"""Which workspaces reach the internet: an image's internet flag (its
lattice.internet label, the admin's choice) and a class's (an exam) decide the
spec the engine gets; the engine makes the network internal when it is off."""

from __future__ import annotations

import pytest

from workspaces.models import Broadcast, Classroom, Image, Seat, Workspace
from workspaces.services import lifecycle

pytestmark = pytest.mark.django_db


@pytest.fixture
def images(db):
    desktop = Image.objects.create(
        slug="desktop", reference="lattice/desktop:latest", kind="display", title="D"
    )
    ide = Image.objects.create(slug="ide", reference="lattice/ide:latest", kind="app", title="IDE")
    return desktop, ide


def workspace_of(owner, desktop, *apps) -> Workspace:
    ws = Workspace.objects.create(owner=owner, display=desktop)
    ws.apps.add(*apps)
    return ws


def test_internet_is_on_by_default(owner, images):
    assert lifecycle.spec_for(workspace_of(owner, *images)).internet is True


def test_an_image_without_internet_takes_its_workspace_off_it(owner, images):
    desktop, ide = images
    offline = Image.objects.create(
        slug="offline", reference="lattice/offline:latest", kind="app", title="Offline", internet=False
    )
    assert lifecycle.spec_for(workspace_of(owner, desktop, ide, offline)).internet is False


def test_a_class_in_exam_mode_takes_its_broadcast_workspaces_off_the_internet(owner, teacher, images):
    desktop, ide = images
    room = Classroom.objects.create(name="Exam", internet=False)
    room.teachers.add(teacher)
    room.students.add(owner)
    sent = Broadcast.objects.create(classroom=room, teacher=teacher, display=desktop)
    ws = workspace_of(owner, desktop, ide)
    Seat.objects.create(broadcast=sent, student=owner, workspace=ws)
    assert lifecycle.spec_for(ws).internet is False
    # The exam is over: the next start has internet again (the engine remakes the network).
    Classroom.objects.filter(pk=room.pk).update(internet=True)
    assert lifecycle.spec_for(ws).internet is True
    # A workspace of the student's own is not the class's.
    assert lifecycle.spec_for(workspace_of(owner, desktop, ide)).internet is True


def test_an_admin_turns_an_images_internet_off(api_client, admin_user, client, images):
    _, ide = images
    api_client.force_authenticate(admin_user)
    answer = api_client.patch(f"/api/admin/images/{ide.pk}/", {"internet": False}, format="json")
    assert answer.status_code == 200 and answer.json()["internet"] is False
    ide.refresh_from_db()
    assert ide.internet is False
    # The page's checkbox, ticked, turns it back on.
    client.force_login(admin_user)
    form = {"title": "IDE", "mem_limit": "1g", "disk_limit": "4g", "cpus": "1", "pids_limit": "256"}
    client.post(f"/manage/images/{ide.pk}/", {**form, "internet": "on", "enabled": "on"})
    ide.refresh_from_db()
    assert ide.internet is True
