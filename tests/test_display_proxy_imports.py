"""The display proxy loads its own package and its settings readers, and nothing else of Lattice's.

It runs as an unprivileged user with only its own settings (scripts/display-proxy):
no Django settings to load, no database, no Celery app. Importing Django or a
service here would quietly hand it all of that.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.support.services import ROOT

SHOW_LOADED = """
import json, sys
import workspaces.display.proxy
print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('workspaces', 'portal', 'django', 'celery'))))
"""


def test_importing_the_proxy_loads_no_django_no_celery_and_no_service():
    environment = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    done = subprocess.run(
        [sys.executable, "-c", SHOW_LOADED],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    loaded = json.loads(done.stdout)
    assert "workspaces.display.proxy" in loaded
    assert "django" not in loaded
    assert "celery" not in loaded
    outside = [m for m in loaded if m not in ("workspaces", "workspaces.lib", "workspaces.lib.env")]
    assert all(m == "workspaces.display" or m.startswith("workspaces.display.") for m in outside), outside
