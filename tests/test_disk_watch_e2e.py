"""The disk watch end to end: a student fills their container's own filesystem,
the watch stops the workspace with a message, and their /data is kept.

The real engine (fuse-overlayfs: no size option, so the limit is watched),
the real worker carrying out the stop, the beat task called as beat calls it.
"""

from __future__ import annotations

import json
import re
import time

import pytest

from tests.support.e2e import running, sh, wait_for_state, wait_for_window
from tests.support.services import ARTIFACTS
from workspaces import tasks
from workspaces.lib.engine_access import backend
from workspaces.models import Image

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.docker]


def test_a_container_that_writes_past_its_limit_is_stopped_and_data_is_kept(engine, student):
    Image.objects.filter(slug="desktop").update(disk_limit="20m")
    title = Image.objects.get(slug="desktop").title
    ws_id = running(student, apps=())
    kept = sh(engine, ws_id, "display", "echo 'my essay' > /data/essay.txt && sha256sum /data/essay.txt")

    # Under the limit: nothing happens.
    assert tasks.watch_disks() == []
    # 40 MB in the home folder: the container's own filesystem, not /data.
    sh(engine, ws_id, "display", 'head -c 41943040 /dev/urandom > "$HOME/big.bin"')
    started = time.monotonic()
    measured = backend().container_disk_usage()
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "disk-watch-seconds.json").write_text(
        json.dumps({"containers": len(measured), "seconds": round(time.monotonic() - started, 2)})
    )

    assert tasks.watch_disks() == [ws_id]

    ws = wait_for_state(ws_id, {"stopped", "failed"}, timeout=60)
    assert ws.state == "stopped"
    assert re.fullmatch(
        rf"Stopped: the {re.escape(title)} container wrote 4\d(\.\d)? MB outside /data, over its 20 MB limit\. "
        r"Delete files you do not need, or save your work in /data\.",
        ws.message,
    ), ws.message
    # What the user sees on the API (the dashboard reads the same).
    shown = student.get(f"/api/workspaces/{ws_id}/").json()
    assert shown["state"] == "stopped" and shown["message"] == ws.message

    # Their files are where they were: /data, and the container's own (stopped, not removed).
    Image.objects.filter(slug="desktop").update(disk_limit="4g")
    assert student.post(f"/api/workspaces/{ws_id}/start/").status_code == 202
    assert wait_for_state(ws_id, {"running", "failed"}).state == "running"
    assert sh(engine, ws_id, "display", "sha256sum /data/essay.txt") == kept
    assert sh(engine, ws_id, "display", 'stat -c %s "$HOME/big.bin"').strip() == "41943040"


def test_the_x_socket_volume_is_a_small_tmpfs_and_the_socket_folder_is_watched(engine, student):
    ws_id = running(student, apps=("ide",))
    # /tmp/.X11-unix is shared with the apps and writable by uid 1000: a 4 MiB tmpfs, not the host's disk.
    out = sh(
        engine,
        ws_id,
        "display",
        "head -c 20971520 /dev/zero 2>&1 >/tmp/.X11-unix/fill; echo rc=$?; rm -f /tmp/.X11-unix/fill",
    )
    assert "No space left on device" in out and "rc=1" in out, out
    # The X socket and its Xauthority are there, and an app reaches the display through them.
    assert sh(engine, ws_id, "display", "test -S /tmp/.X11-unix/X0 && echo yes").strip() == "yes"
    wait_for_window(engine, ws_id, "Geany")  # the IDE, an X client in another container

    # The display's socket folder is a host folder, outside the layer: the watch measures it too.
    assert tasks.watch_disks() == []
    sh(engine, ws_id, "display", "head -c 20971520 /dev/urandom > /run/lattice-vnc/fill")
    assert tasks.watch_disks() == [ws_id]
    ws = wait_for_state(ws_id, {"stopped", "failed"}, timeout=60)
    assert ws.state == "stopped"
    assert ws.message.startswith("Stopped: 20 MB were written into the display's socket folder"), ws.message
