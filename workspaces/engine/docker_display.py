"""Docker side of VNC password rotation: a running display takes new passwords at once.

A mixin of DockerBackend, like docker_data.py. The display's entrypoint
(images/desktop/lattice-display) writes Xvnc's password file once, in
/dev/shm; Xvnc reads that file again at every authentication, so replacing
it (atomically, by rename) is a rotation: connections already open stay,
and from that moment only the new passwords open the display.
"""

from __future__ import annotations

import docker

from . import names
from .docker_common import USER, status_code, translated
from .errors import ContainerNotFound, EngineError

# Where lattice-display keeps Xvnc's password file (its -rfbauth).
RFBAUTH = "/dev/shm/lattice-vnc/passwd"  # noqa: S108  (inside the container, its own tmpfs)
# vncpasswd -f: the first line is the full-control password, the second the
# view-only one. The passwords come in the exec's environment, never on a
# command line (which every process of the host can read).
_WRITE = 'umask 077; printf "%s\\n%s\\n" "$P" "$V" | vncpasswd -f > "$F.new" && mv -f "$F.new" "$F"'


class DockerDisplayOps:
    """set_vnc_passwords for DockerBackend."""

    api: docker.APIClient
    prefix: str

    def set_vnc_passwords(self, workspace_id: str, password: str, view_password: str) -> None:
        if not password or not view_password:
            raise EngineError("A display needs both VNC passwords.")
        name = names.container(self.prefix, str(workspace_id), "display")
        env = {"P": password, "V": view_password, "F": RFBAUTH}
        with translated("Changing the display's passwords"):
            try:
                exec_id = self.api.exec_create(
                    name, ["sh", "-c", _WRITE], user=USER, environment=env, stdout=True, stderr=True
                )["Id"]
            except docker.errors.NotFound as exc:
                raise ContainerNotFound("The workspace has no display.") from exc
            except docker.errors.APIError as exc:
                if status_code(exc) == 409:
                    raise EngineError("The display is not running.") from exc
                raise
            output = self.api.exec_start(exec_id)
            code = self.api.exec_inspect(exec_id)["ExitCode"]
        if code != 0:
            tail = output.decode("utf-8", "replace").strip()[-200:]
            raise EngineError(f"The display did not take its new passwords (exit {code}): {tail}")
