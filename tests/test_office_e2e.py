"""The on-demand app image (LibreOffice): built by `make images IMAGES=office`, launched like any app.

Its first build takes about two minutes (LibreOffice from Debian's packages);
afterwards build-images finds it up to date in a second.
"""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import TEST_ORIGIN
from tests.support.e2e import running, wait_for_window
from tests.support.services import ROOT
from workspaces.display.rfb import RFBClient
from workspaces.services.catalog import sync_from_engine

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.docker]


@pytest.fixture(scope="session")
def office_image():
    built = subprocess.run([str(ROOT / "scripts" / "build-images"), "office"], capture_output=True, text=True)
    assert built.returncode == 0, built.stdout + built.stderr
    return "lattice/office:latest"


def test_office_is_built_on_demand_and_opens_on_the_desktop(office_image, engine, student):
    assert "office" in {image.slug for image in sync_from_engine()}
    ws_id = running(student, apps=("office",))
    wait_for_window(engine, ws_id, "LibreOffice", timeout=60)
    grant = student.post(f"/api/workspaces/{ws_id}/display-token/", {"mode": "view"}, format="json").json()
    with RFBClient(grant["url"], grant["password"], origin=TEST_ORIGIN) as rfb:
        assert rfb.frame().distinct_colours() > 20  # a start center, not a bare background
