"""The Docker backend: a workspace is one X socket volume, one folder on the
host for the display's VNC socket, and one container per ContainerSpec, all
sharing the owner's data volume. The apps get a private bridge network of
their own; the display gets no network at all: its VNC server listens only
on a unix socket that the display proxy opens on this host.

The engine's labels, not any database, say what exists: every object carries
lattice.prefix, lattice.workspace, lattice.owner and lattice.role, and every
lookup here goes through them (or through the deterministic names in names.py).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import random
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import docker
import docker.errors
from docker.types import IPAMConfig, IPAMPool, LogConfig

from ..display import sockets as display_socket
from . import names
from .base import FAILED, MISSING, RUNNING, STOPPED, Backend, Progress, no_progress
from .docker_catalog import DockerCatalogOps
from .docker_common import (
    LABEL_CONTAINER,
    LABEL_OWNER,
    LABEL_OWNER_ID,
    LABEL_PREFIX,
    LABEL_ROLE,
    LABEL_WORKSPACE,
    USER,
    USER_ID,
    status_code,
    translated,
)
from .docker_data import DockerDataOps
from .docker_display import DockerDisplayOps
from .docker_usage import DockerUsageOps
from .docker_volumes import DockerVolumeOps
from .egress import EgressFirewall
from .errors import (
    ContainerNotFound,
    EngineError,
    ImageNotFound,
    InvalidSpecError,
    StartFailed,
    StartTimeout,
)
from .retries import idempotent
from .specs import ContainerSpec, ContainerState, Endpoint, WorkspaceSpec

logger = logging.getLogger(__name__)

X11_DIR = "/tmp/.X11-unix"  # noqa: S108  (a mount point inside the container, X11 fixes it)
DATA_DIR = "/data"
# Inside the display: where its folder of the socket root is mounted.
VNC_SOCKET_DIR = "/run/lattice-vnc"
# The X socket's volume is a small tmpfs: it holds one socket (and its lock is
# in /tmp), yet every container of the workspace, as uid 1000, may write in it,
# and a plain local volume would be the host's disk without any limit.
# Sticky and world-writable as X11 wants /tmp/.X11-unix.
X11_VOLUME_OPTIONS = {
    "type": "tmpfs",
    "device": "tmpfs",
    "o": f"size=4m,uid={USER_ID},gid={USER_ID},mode=1777",
}
VNC_SOCKET = "vnc.sock"
# A unix socket path holds at most 107 bytes (sun_path).
_MAX_SOCKET_PATH = 107
DEFAULT_SOCKET_ROOT = "/run/lattice/displays"
APP_SYSCTLS = {"net.ipv6.conf.all.disable_ipv6": "1", "net.ipv6.conf.default.disable_ipv6": "1"}

# docker's own states, as the workspace contract names them.
_STATES = {
    "running": "running",
    "exited": "stopped",
    "created": "created",
    "paused": "paused",
    "restarting": "restarting",
    "removing": "stopped",
    "dead": "failed",
}

T = TypeVar("T")


def _ignore_missing(call: Callable[[], T]) -> T | None:
    """Run an engine call for which "not found" means "already done"."""
    try:
        return call()
    except docker.errors.NotFound:
        return None


def _proc_stat(pid: int) -> tuple[int, int] | None:
    """A host process's parent and start time (clock ticks after boot); None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            # After the command's closing parenthesis: state, ppid, ... starttime is field 22.
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), int(fields[19])


@dataclass
class _Created:
    """What one start() call created, so a failed start removes exactly that."""

    network: bool = False
    x11: bool = False
    socket_dir: bool = False
    containers: list[str] = field(default_factory=list)
    started: list[str] = field(default_factory=list)  # existing containers it started


class DockerBackend(
    DockerDataOps, DockerVolumeOps, DockerCatalogOps, DockerUsageOps, DockerDisplayOps, Backend
):
    def __init__(
        self,
        prefix: str = "lattice",
        client: docker.DockerClient | None = None,
        *,
        ready_interval: float = 0.02,
        stop_timeout: int = 5,
        network_pool: str = "172.30.0.0/16",
        egress_by_site: bool = False,
        socket_root: str = DEFAULT_SOCKET_ROOT,
    ) -> None:
        self.prefix = names.check_prefix(prefix)
        # The display's VNC socket lives in a folder of this host, bind-mounted
        # into the display. The Docker engine, the worker and the display
        # proxy must all see this path: they run on the same host.
        self.socket_root = os.path.abspath(socket_root)
        longest = self._socket_path("f" * 24)
        if len(longest.encode()) > _MAX_SOCKET_PATH:
            raise InvalidSpecError(
                f"The display socket folder {self.socket_root} is too deep for a unix socket "
                f"({len(longest.encode())} bytes, at most {_MAX_SOCKET_PATH}); choose a shorter path."
            )
        self._client = client
        self._client_lock = threading.Lock()
        self.ready_interval = ready_interval
        self.stop_timeout = stop_timeout
        # Each workspace network takes a /28 (14 addresses: plenty for a display
        # and its apps) from this range. Docker's default pools hand out whole
        # /16s and /20s, about thirty networks in all: fewer than one class.
        self.network_pool = ipaddress.ip_network(network_pool)
        # Apps reach the internet only: host rules for the whole pool
        # (egress.py), checked before each start that has apps. None: the
        # site's own firewall does it (LATTICE_EGRESS_FIREWALL=site).
        self.egress = None if egress_by_site else EgressFirewall(str(self.network_pool))

    # -- plumbing ---------------------------------------------------------

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            with self._client_lock, translated("Connecting to the container engine"):
                if self._client is None:
                    # version=None asks the engine which API it speaks (one call,
                    # once): docker-py's default is newer than Docker 20.10's.
                    self._client = docker.from_env(timeout=60, max_pool_size=16)
        return self._client

    @property
    def api(self) -> docker.APIClient:
        return self.client.api

    def _labels(self, spec: WorkspaceSpec, role: str, **extra: str) -> dict[str, str]:
        return {
            LABEL_PREFIX: self.prefix,
            LABEL_WORKSPACE: spec.workspace_id,
            LABEL_OWNER: spec.owner,
            LABEL_ROLE: role,
            **extra,
        }

    def _filters(self, workspace_id: str | None = None) -> dict[str, list[str]]:
        labels = [f"{LABEL_PREFIX}={self.prefix}"]
        if workspace_id is not None:
            labels.append(f"{LABEL_WORKSPACE}={workspace_id}")
        return {"label": labels}

    def _rows(self, workspace_id: str | None = None) -> list[dict[str, Any]]:
        """Containers (any state) from one list call: state, image, labels, IPs."""
        with translated("Listing containers"):
            return self.api.containers(all=True, filters=self._filters(workspace_id))

    @staticmethod
    def _parallel(calls: list[Callable[[], Any]]) -> list[BaseException | Any]:
        """Run engine calls at once; return each result or the exception it raised."""
        if len(calls) <= 1:
            out: list[BaseException | Any] = []
            for call in calls:
                try:
                    out.append(call())
                except Exception as exc:
                    out.append(exc)
            return out
        with ThreadPoolExecutor(max_workers=min(8, len(calls))) as pool:
            futures = [pool.submit(call) for call in calls]
            results: list[BaseException | Any] = []
            for future in futures:
                exc = future.exception()
                results.append(exc if exc is not None else future.result())
            return results

    @staticmethod
    def _raise_first(results: list[BaseException | Any]) -> None:
        for result in results:
            if isinstance(result, BaseException):
                raise result

    # -- start ----------------------------------------------------------

    def start(self, spec: WorkspaceSpec, progress: Progress = no_progress, timeout: float = 60) -> Endpoint:
        deadline = time.monotonic() + timeout
        if not spec.vnc_password:
            # Fail closed: the display would otherwise be open to anyone who
            # can reach its network.
            raise InvalidSpecError("A workspace needs a VNC password.")

        def report(percent: int, message: str) -> None:
            try:
                progress(percent, message)
            except Exception:
                # A broken progress channel must not fail the workspace.
                logger.exception("progress callback failed")

        created = _Created()
        try:
            with translated("Starting the workspace"):
                return self._start(spec, report, deadline, timeout, created)
        except BaseException:
            self._undo(spec, created)
            raise

    def _start(
        self,
        spec: WorkspaceSpec,
        report: Progress,
        deadline: float,
        timeout: float,
        created: _Created,
    ) -> Endpoint:
        ws = spec.workspace_id
        if spec.apps and self.egress is not None:
            # Before anything is made: no app runs without its egress rules.
            self.egress.ensure()
        report(5, "Preparing volumes")
        x11_created, _, dir_created = results = self._parallel(
            [
                lambda: self._ensure_volume(
                    names.x11_volume(self.prefix, ws), self._labels(spec, "x11"), X11_VOLUME_OPTIONS
                ),
                lambda: self._ensure_volume(
                    names.data_volume(self.prefix, spec.owner_id),
                    # Shared by all of the owner's workspaces: no workspace label,
                    # so nothing that removes a workspace ever matches it.
                    self.data_volume_labels(spec.owner_id),
                ),
                lambda: self._ensure_socket_dir(ws),
            ]
        )
        created.x11 = x11_created is True
        created.socket_dir = dir_created is True
        self._raise_first(results)

        display = names.container(self.prefix, ws, spec.display.name)
        # The apps' network takes about 0.1 s to make and the display needs
        # none: it is made, with the app containers, while the display starts.
        with ThreadPoolExecutor(max_workers=1) as side:
            apps_created = side.submit(self._create_apps, spec, created) if spec.apps else None
            report(15, "Creating the display")
            if self._ensure_container(spec, spec.display):
                created.containers.append(spec.display.name)
            report(30, "Starting the display")
            self._start_container(spec.display.name, display, created)
            report(50, "Waiting for the display")
            endpoint = self._wait_for_display(display, ws, deadline, timeout)
            if apps_created is not None:
                apps_created.result()

        if spec.apps:
            # Apps connect to the X socket the display just made, so they go last.
            report(80, f"Starting {', '.join(a.name for a in spec.apps)}")
            self._raise_first(
                self._parallel(
                    [
                        lambda a=a: self._start_container(
                            a.name, names.container(self.prefix, ws, a.name), created
                        )
                        for a in spec.apps
                    ]
                )
            )
        report(100, "Ready")
        return endpoint

    def _create_apps(self, spec: WorkspaceSpec, created: _Created) -> None:
        """The workspace's private network, then every app container (not started)."""
        created.network = self._ensure_network(spec) is True
        results = self._parallel([lambda c=c: self._ensure_container(spec, c) for c in spec.apps])
        for c, result in zip(spec.apps, results, strict=True):
            if result is True:
                created.containers.append(c.name)
        self._raise_first(results)

    # -- the display's socket folder ------------------------------------------

    def _socket_dir(self, workspace_id: str) -> str:
        return os.path.join(self.socket_root, names.display_socket_dir(self.prefix, workspace_id))

    def _socket_path(self, workspace_id: str) -> str:
        return os.path.join(self._socket_dir(workspace_id), VNC_SOCKET)

    def _ensure_socket_dir(self, workspace_id: str) -> bool:
        """The display's socket folder; True when this call made it.

        The display (uid 1000) makes the socket in it. Owned by uid 1000 when
        we may change owners (root); else writable by others but not
        listable. Its group is the socket root's (scripts/setup gives the
        root the display proxy's group), and setgid: the socket takes that
        group, so the proxy, in that group and nothing more, may connect
        (Xvnc makes it mode 0660). The student can still write here: readers
        connect through workspaces/display/sockets.py, which trusts nothing in it.
        """
        os.makedirs(self.socket_root, mode=0o711, exist_ok=True)
        path = self._socket_dir(workspace_id)
        try:
            os.mkdir(path)
        except FileExistsError:
            return False
        try:
            os.chown(path, USER_ID, os.stat(self.socket_root).st_gid)
            os.chmod(path, 0o2770)  # noqa: S103  (see the docstring)
        except PermissionError:
            os.chmod(path, 0o2773)  # noqa: S103  (see the docstring)
        return True

    def _probe_display(self, workspace_id: str, container_id: str, timeout: float) -> int | None:
        """The pid of the display container's process serving RFB on its socket, or None."""
        folder = names.display_socket_dir(self.prefix, workspace_id)
        return display_socket.probe(self.socket_root, folder, container_id, timeout)

    def _started_first(self, container_id: str, pid: int) -> bool:
        """Whether ``pid`` started before every process of the container but its own ancestors.

        The display's entrypoint starts Xvnc before anything else; every
        process of the student's comes later. So a display that was already
        running (a failed workspace started again), whose socket a student's
        own server may hold by now, still gives Xvnc's pid or none.
        """
        stats = {}
        for row in self.api.top(container_id, ps_args="-o pid")["Processes"]:
            stat = _proc_stat(int(row[0]))
            if stat is not None:  # not one that ended meanwhile
                stats[int(row[0])] = stat
        if pid not in stats:
            return False
        ancestors, parent = set(), stats[pid][0]
        while parent in stats and parent not in ancestors:
            ancestors.add(parent)
            parent = stats[parent][0]
        started = stats[pid][1]
        earlier = sorted(q for q, (_, since) in stats.items() if q not in ancestors and since < started)
        if earlier:
            logger.warning(
                "display %s: process %s answers on its socket, but %s started before it",
                container_id[:12],
                pid,
                earlier,
            )
        return not earlier

    def _remove_socket_dir(self, workspace_id: str) -> None:
        shutil.rmtree(self._socket_dir(workspace_id), ignore_errors=True)

    def _ensure_network(self, spec: WorkspaceSpec) -> bool:
        """The apps' network, internal (no route out) unless the spec has internet; True when made."""
        name = names.network(self.prefix, spec.workspace_id)
        internal = not spec.internet
        try:
            info = self.api.inspect_network(name)
        except docker.errors.NotFound:
            return self._create_network(spec, name, internal)
        if bool(info.get("Internal")) != internal:
            # Started again with other settings (an exam began or ended).
            self._replace_network(spec, name, internal)
        return False

    def _create_network(self, spec: WorkspaceSpec, name: str, internal: bool) -> bool:
        for _ in range(8):  # another start may take the same free subnet at the same moment
            subnet = self._free_subnet()
            try:
                self.api.create_network(
                    name,
                    driver="bridge",
                    check_duplicate=True,
                    internal=internal,
                    labels=self._labels(spec, "network"),
                    ipam=IPAMConfig(pool_configs=[IPAMPool(subnet=str(subnet))]),
                )
            except docker.errors.APIError as exc:
                if status_code(exc) == 409:  # it exists: reuse it
                    return False
                if "overlap" in str(exc).lower():
                    continue
                raise
            return True
        raise EngineError("No free network address range for the workspace; try again in a moment.")

    def _replace_network(self, spec: WorkspaceSpec, name: str, internal: bool) -> None:
        """The same network made anew with the other internal flag; the workspace's
        existing apps (their filesystems are the user's work) move over to it."""
        apps = [r["Id"] for r in self._rows(spec.workspace_id) if r["Labels"].get(LABEL_ROLE) == "app"]
        for app in apps:
            with contextlib.suppress(docker.errors.APIError):  # not connected: nothing to undo
                self.api.disconnect_container_from_network(app, name, force=True)
        _ignore_missing(lambda: self.api.remove_network(name))
        self._create_network(spec, name, internal)
        for app in apps:
            self.api.connect_container_to_network(app, name)

    def _free_subnet(self) -> ipaddress.IPv4Network:
        used = []
        for network in self.api.networks():
            for config in (network.get("IPAM") or {}).get("Config") or []:
                with contextlib.suppress(KeyError, ValueError):
                    used.append(ipaddress.ip_network(config["Subnet"]))
        # Start at a random place so that simultaneous starts rarely pick the same one.
        candidates = list(self.network_pool.subnets(new_prefix=28))
        offset = random.randrange(len(candidates))
        for subnet in candidates[offset:] + candidates[:offset]:
            if not any(subnet.overlaps(taken) for taken in used if taken.version == 4):
                return subnet
        raise EngineError(
            f"Every address range in {self.network_pool} is in use: too many workspaces at once."
        )

    def data_volume_labels(self, owner_id: int) -> dict[str, str]:
        return {LABEL_PREFIX: self.prefix, LABEL_OWNER_ID: str(owner_id), LABEL_ROLE: "data"}

    def _ensure_volume(
        self, name: str, labels: dict[str, str], driver_opts: dict[str, str] | None = None
    ) -> bool:
        try:
            self.api.inspect_volume(name)
            return False
        except docker.errors.NotFound:
            pass
        # Creating an existing local volume is not an error, so a race with
        # another start is harmless.
        self.api.create_volume(name, driver="local", labels=labels, driver_opts=driver_opts)
        return True

    def _env(self, spec: WorkspaceSpec, c: ContainerSpec) -> dict[str, str]:
        env = dict(c.env)
        if c.role == "display":
            # Only the display gets the passwords; its entrypoint turns them
            # into Xvnc's password file and unsets them before anything runs.
            env.update(
                LATTICE_VNC_PASSWORD=spec.vnc_password,
                LATTICE_VNC_VIEW_PASSWORD=spec.vnc_view_password,
                LATTICE_DISPLAY_SOCKET=f"{VNC_SOCKET_DIR}/{VNC_SOCKET}",
                LATTICE_GEOMETRY=spec.geometry,
                LATTICE_KIOSK="1" if spec.kiosk else "0",
            )
        return env

    def _container_config(self, spec: WorkspaceSpec, c: ContainerSpec) -> dict[str, Any]:
        ws = spec.workspace_id
        limits = c.limits
        binds = {
            names.x11_volume(self.prefix, ws): {"bind": X11_DIR, "mode": "rw"},
            names.data_volume(self.prefix, spec.owner_id): {"bind": DATA_DIR, "mode": "rw"},
        }
        if c.role == "display":
            binds[self._socket_dir(ws)] = {"bind": VNC_SOCKET_DIR, "mode": "rw"}
        host_config = self.api.create_host_config(
            binds=binds,
            # The display reaches nothing and nothing reaches it but through
            # its socket; apps get the workspace's own network (pip, git).
            network_mode="none" if c.role == "display" else names.network(self.prefix, ws),
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            privileged=False,
            mem_limit=limits.mem_limit,
            # Same as mem_limit: no extra swap (ignored where the kernel has
            # no swap accounting).
            memswap_limit=limits.mem_limit,
            nano_cpus=int(limits.cpus * 1_000_000_000),
            pids_limit=limits.pids_limit,
            shm_size=limits.shm_size,
            ipc_mode="private",
            # Workspace networks are IPv4 only: no link-local IPv6 path to the host.
            sysctls=None if c.role == "display" else APP_SYSCTLS,
            # A chatty app must not fill the host's disk with logs.
            log_config=LogConfig(type=LogConfig.types.JSON, config={"max-size": "1m", "max-file": "2"}),
        )
        return {
            "image": c.image,
            "name": names.container(self.prefix, ws, c.name),
            "hostname": c.name,
            "user": USER,
            "environment": self._env(spec, c),
            "command": list(c.command) if c.command is not None else None,
            "labels": self._labels(spec, c.role, **{LABEL_CONTAINER: c.name}),
            "host_config": host_config,
            "detach": True,
        }

    def _ensure_container(self, spec: WorkspaceSpec, c: ContainerSpec) -> bool:
        """Create the container unless it exists; True when this call created it."""
        config = self._container_config(spec, c)
        try:
            self.api.create_container(**config)
            return True
        except docker.errors.ImageNotFound as exc:
            raise ImageNotFound(f"The image {c.image} of {c.name!r} is not on this engine.") from exc
        except docker.errors.APIError as exc:
            if status_code(exc) != 409:
                raise
        # It exists. Apps are reused as they are (their filesystem is the
        # user's work); the display holds nothing of the user's, and its
        # passwords and screen are fixed at creation, so it is made anew when
        # those changed.
        if c.role == "display" and not self._display_matches(config):
            self.api.remove_container(config["name"], force=True)
            self.api.create_container(**config)
            return True
        return False

    def _display_matches(self, config: dict[str, Any]) -> bool:
        info = self.api.inspect_container(config["name"])
        have = set(info["Config"].get("Env") or [])
        want = {f"{k}={v}" for k, v in config["environment"].items()}
        same_cmd = config["command"] is None or info["Config"].get("Cmd") == config["command"]
        return info["Config"].get("Image") == config["image"] and want <= have and same_cmd

    def _start_container(self, name: str, docker_name: str, created: _Created) -> None:
        # Starting a running container is a no-op (304) for docker.
        self.api.start(docker_name)
        if name not in created.containers:
            created.started.append(docker_name)

    def _wait_for_display(
        self, container: str, workspace_id: str, deadline: float, timeout: float
    ) -> Endpoint:
        """The display's endpoint once its VNC server answers, naming that server's process.

        It runs before any process of the student's can (the desktop starts
        after Xvnc answers), so the pid it records is Xvnc's; every later
        connection insists on it.
        """
        container_id = self.api.inspect_container(container)["Id"]
        path = self._socket_path(workspace_id)
        next_check = time.monotonic() + 1.0
        while True:
            now = time.monotonic()
            pid = self._probe_display(workspace_id, container_id, max(0.05, min(0.5, deadline - now)))
            if pid is not None and self._started_first(container_id, pid):
                return Endpoint(path=path, container_id=container_id, server_pid=pid)
            now = time.monotonic()
            if now >= deadline:
                hint = "" if os.path.exists(path) else f" (no socket appeared at {path})"
                raise StartTimeout(f"The display did not answer within {timeout:g} s{hint}.")
            if now >= next_check:
                # The display may have died (bad image, no password): say so
                # now rather than at the deadline.
                state = self.api.inspect_container(container)["State"]
                if not state.get("Running"):
                    tail = self.api.logs(container, tail=3).decode("utf-8", "replace").strip()
                    raise StartFailed(
                        f"The display exited (code {state.get('ExitCode')}): {tail or 'no output'}"
                    )
                next_check = now + 1.0
            time.sleep(min(self.ready_interval, max(0.0, deadline - now)))

    def _undo(self, spec: WorkspaceSpec, created: _Created) -> None:
        """Best effort: remove what a failed start created, stop what it started."""
        ws = spec.workspace_id
        calls: list[Callable[[], Any]] = [
            lambda n=n: _ignore_missing(
                lambda: self.api.remove_container(names.container(self.prefix, ws, n), force=True)
            )
            for n in created.containers
        ]
        calls += [
            lambda n=n: _ignore_missing(lambda: self.api.stop(n, timeout=self.stop_timeout))
            for n in created.started
        ]
        for result in self._parallel(calls):
            if isinstance(result, Exception):
                logger.warning("cleanup of workspace %s: %s", ws, result)
        try:
            if created.network:
                _ignore_missing(lambda: self.api.remove_network(names.network(self.prefix, ws)))
            if created.x11:
                _ignore_missing(lambda: self.api.remove_volume(names.x11_volume(self.prefix, ws)))
        except Exception as exc:
            logger.warning("cleanup of workspace %s: %s", ws, exc)
        if created.socket_dir:
            self._remove_socket_dir(ws)

    def ensure_egress(self) -> bool:
        return self.egress is not None and self.egress.ensure()

    # -- stop / remove ----------------------------------------------------

    @idempotent
    def stop(self, workspace_id: str) -> None:
        rows = [r for r in self._rows(workspace_id) if r["State"] in ("running", "restarting", "paused")]
        with translated("Stopping the workspace"):
            self._raise_first(self._parallel([lambda r=r: self._stop_container(r) for r in rows]))

    def _stop_container(self, row: dict[str, Any]) -> None:
        """SIGTERM, sent again until the container exits, then SIGKILL.

        docker stop sends SIGTERM once. A container stopped within moments of
        its start loses it: PID 1 (tini) drops signals until it has set up
        its signal handling, and docker then waits the whole timeout before
        the SIGKILL. Sending again costs nothing and ends that wait.
        """
        container = row["Id"]
        if row["State"] != "running":  # paused or restarting: docker knows best
            _ignore_missing(lambda: self.api.stop(container, timeout=self.stop_timeout))
            return
        deadline = time.monotonic() + self.stop_timeout
        next_signal = 0.0
        while time.monotonic() < deadline:
            if time.monotonic() >= next_signal:
                try:
                    self.api.kill(container, signal="SIGTERM")
                except docker.errors.NotFound:
                    return
                except docker.errors.APIError as exc:
                    if status_code(exc) == 409:  # not running any more
                        return
                    raise
                next_signal = time.monotonic() + 0.5
            time.sleep(0.05)
            try:
                if not self.api.inspect_container(container)["State"]["Running"]:
                    return
            except docker.errors.NotFound:
                return
        _ignore_missing(lambda: self.api.stop(container, timeout=0))

    @idempotent
    def remove(self, workspace_id: str) -> None:
        rows = self._rows(workspace_id)
        with translated("Removing the workspace"):
            results = self._parallel(
                [
                    lambda r=r: _ignore_missing(lambda: self.api.remove_container(r["Id"], force=True))
                    for r in rows
                ]
            )
            # 409: docker is already removing it.
            self._raise_first([r for r in results if status_code(r) != 409])
            for net in self.api.networks(filters=self._filters(workspace_id)):
                _ignore_missing(lambda net=net: self.api.remove_network(net["Id"]))
            volumes = self.api.volumes(filters=self._filters(workspace_id)).get("Volumes") or []
            for volume in volumes:
                if (volume.get("Labels") or {}).get(LABEL_ROLE) == "data":
                    continue  # never, whatever its labels say
                _ignore_missing(lambda v=volume: self.api.remove_volume(v["Name"]))
        self._remove_socket_dir(workspace_id)

    # -- state --------------------------------------------------------------

    @staticmethod
    def _workspace_state(rows: list[dict[str, Any]]) -> str:
        if not rows:
            return MISSING
        roles = [r["Labels"].get(LABEL_ROLE) for r in rows]
        # Paused is up: a save as image pauses the container for its commit,
        # and a reconcile pass meanwhile must not take it for dead.
        running = [r for r in rows if r["State"] in ("running", "paused")]
        if "display" not in roles or any(r["State"] == "dead" for r in rows):
            return FAILED
        if len(running) == len(rows):
            return RUNNING
        if not running:
            return STOPPED
        # Some up, some down: a display or an app died under the user.
        return FAILED

    @idempotent
    def poll(self, workspace_id: str) -> str:
        return self._workspace_state(self._rows(str(workspace_id)))

    @idempotent
    def containers(self, workspace_id: str) -> list[ContainerState]:
        rows = self._rows(str(workspace_id))
        rows.sort(
            key=lambda r: (r["Labels"].get(LABEL_ROLE) != "display", r["Labels"].get(LABEL_CONTAINER, ""))
        )
        return [
            ContainerState(
                name=r["Labels"].get(LABEL_CONTAINER, r["Names"][0].lstrip("/")),
                image=r["Image"],
                state=_STATES.get(r["State"], r["State"]),
            )
            for r in rows
        ]

    @idempotent
    def endpoint(self, workspace_id: str) -> Endpoint | None:
        ws = str(workspace_id)
        for r in self._rows(ws):
            if r["Labels"].get(LABEL_ROLE) == "display" and r["State"] == "running":
                pid = self._probe_display(ws, r["Id"], timeout=2.0)
                if pid is not None and not self._started_first(r["Id"], pid):
                    pid = None  # a student's own server holds the socket: no pid to trust
                return Endpoint(path=self._socket_path(ws), container_id=r["Id"], server_pid=pid or 0)
        return None

    @idempotent
    def list_workspaces(self) -> dict[str, str]:
        by_ws: dict[str, list[dict[str, Any]]] = {}
        for r in self._rows():
            ws = r["Labels"].get(LABEL_WORKSPACE)
            if ws is not None:
                by_ws.setdefault(ws, []).append(r)
        out = {ws: self._workspace_state(rows) for ws, rows in by_ws.items()}
        # A network or X volume without containers is left from a crash; it
        # is listed (as missing) so a reconcile can remove() it.
        with translated("Listing workspaces"):
            leftovers = list(self.api.networks(filters=self._filters()))
            leftovers += self.api.volumes(filters=self._filters()).get("Volumes") or []
        for obj in leftovers:
            ws = (obj.get("Labels") or {}).get(LABEL_WORKSPACE)
            if ws is not None and ws not in out:
                out[ws] = MISSING
        with contextlib.suppress(FileNotFoundError):
            for folder in os.listdir(self.socket_root):
                ws = names.workspace_of_socket_dir(self.prefix, folder)
                if ws is not None and ws not in out:
                    out[ws] = MISSING
        return out

    # -- images -----------------------------------------------------------

    @idempotent
    def image_labels(self, image: str) -> dict[str, str]:
        with translated(f"Reading image {image}"):
            try:
                info = self.api.inspect_image(image)
            except docker.errors.NotFound as exc:
                raise ImageNotFound(f"The image {image} is not on this engine.") from exc
        return dict(info.get("Config", {}).get("Labels") or {})

    @idempotent
    def list_images(self) -> list[dict[str, Any]]:
        """Images carrying lattice.* labels, one entry per image id.

        name is the repository's last part ("lattice/ide:latest" -> "ide"):
        labels are inherited by images built FROM another, so a label cannot
        name the image itself.
        """
        with translated("Listing images"):
            rows = self.api.images()
        out = []
        for row in rows:
            # Empty labels are ones a commit blanked out (see commit()).
            labels = {k: v for k, v in (row.get("Labels") or {}).items() if v != ""}
            tags = [t for t in row.get("RepoTags") or [] if t != "<none>:<none>"]
            if not tags or not any(k.startswith("lattice.") for k in labels):
                continue
            reference = next((t for t in tags if t.endswith(":latest")), sorted(tags)[0])
            out.append(
                {
                    "id": row["Id"],
                    "name": reference.rsplit(":", 1)[0].rsplit("/", 1)[-1],
                    "reference": reference,
                    "tags": sorted(tags),
                    "size": row.get("Size", 0),
                    "created": datetime.fromtimestamp(row.get("Created", 0), tz=UTC),
                    "labels": dict(labels),
                }
            )
        out.sort(key=lambda i: i["reference"])
        return out

    # -- exec ---------------------------------------------------------------

    def exec(self, workspace_id: str, container: str, cmd: list[str]) -> tuple[int, bytes]:
        name = names.container(self.prefix, str(workspace_id), container)
        with translated(f"Running a command in {container}"):
            try:
                exec_id = self.api.exec_create(name, cmd, user=USER, stdout=True, stderr=True)["Id"]
            except docker.errors.NotFound as exc:
                raise ContainerNotFound(f"The workspace has no container {container!r}.") from exc
            except docker.errors.APIError as exc:
                if status_code(exc) == 409:
                    raise EngineError(f"The container {container!r} is not running.") from exc
                raise
            output = self.api.exec_start(exec_id)
            code = self.api.exec_inspect(exec_id)["ExitCode"]
        return int(code if code is not None else -1), output
