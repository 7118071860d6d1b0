"""VNC passwords rotate on a running display: the real engine, the real desktop image."""

from __future__ import annotations

import pytest

from tests.engine.conftest import PASSWORD, VIEW_PASSWORD
from tests.engine.test_docker_backend import connect
from workspaces.display.rfb import RFBError
from workspaces.engine.errors import EngineError


def test_new_passwords_open_the_display_and_the_old_ones_nothing(backend, desktop):
    endpoint = backend.endpoint(desktop.workspace_id)
    before = connect(endpoint, PASSWORD)  # e.g. the student's own viewer, open during the rotation
    try:
        backend.set_vnc_passwords(desktop.workspace_id, "new-ctl1", "new-vie1")
        for old in (PASSWORD, VIEW_PASSWORD):
            with pytest.raises(RFBError, match=r"(?i)authentication fail"):
                connect(endpoint, old)
        for new in ("new-ctl1", "new-vie1"):
            with connect(endpoint, new) as client:
                assert client.frame().width == 1280
        # A connection made before goes on: only new authentications see the change.
        assert before.frame().width == 1280
    finally:
        before.close()


def test_a_display_that_does_not_run_is_an_engine_error(backend, make_spec):
    with pytest.raises(EngineError):
        backend.set_vnc_passwords(make_spec().workspace_id, "new-ctl1", "new-vie1")
