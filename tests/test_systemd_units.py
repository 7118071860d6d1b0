"""deploy/systemd: every process of the Procfile has a unit, and each unit
restarts its process when it crashes, after a pause (systemd gives up on a
unit restarted 5 times within 10 s, so a bare 100 ms would end in a unit
left stopped while, say, Redis restarts)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.support.services import ROOT

UNITS = ROOT / "deploy" / "systemd"
# Redis is the distribution's own unit (redis-server.service), which restarts it.
NOT_OURS = {"redis"}


def service_settings(path: Path) -> dict[str, list[str]]:
    """The [Service] section's settings, each with every value it is given."""
    settings: dict[str, list[str]] = {}
    section = None
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
        elif section == "Service":
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def seconds(value: str) -> float:
    """A systemd time span: "2", "500ms", "1min 30s"."""
    units = {"": 1, "s": 1, "sec": 1, "ms": 0.001, "min": 60, "m": 60}
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value)
    assert parts and "".join(n + u for n, u in parts) == value.replace(" ", ""), value
    return sum(float(number) * units[unit] for number, unit in parts)


def test_every_process_of_the_procfile_has_a_unit():
    processes = {
        line.split(":", 1)[0] for line in (ROOT / "Procfile").read_text().splitlines() if ":" in line
    }
    units = {re.sub(r"^lattice-|@?\.service$", "", path.name) for path in UNITS.glob("*.service")}
    assert processes - NOT_OURS <= units, f"no unit in deploy/systemd for {processes - NOT_OURS - units}"


def test_every_unit_restarts_its_process_after_a_pause():
    paths = sorted(UNITS.glob("*.service"))
    assert len(paths) >= 5
    for path in paths:
        settings = service_settings(path)
        assert settings.get("Restart", [""])[-1] in ("on-failure", "always"), path.name
        assert seconds(settings.get("RestartSec", ["0"])[-1]) >= 1, path.name
