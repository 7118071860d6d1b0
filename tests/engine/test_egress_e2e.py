"""Workspaces reach the internet only: never the host, a private network or
another workspace (engine/egress.py, the apps' network in docker_backend.py).

Every listener here is one the test starts: on the host (bound to the
workspace bridge's gateway address, and to 0.0.0.0), inside a second
workspace, and in a network namespace of the test's own on a private range
(10.213.7.0/30) routed by this host. A real app container tries them as its
student (uid 1000, bash's /dev/tcp) and none may hear a byte; each listener is
first shown to be reachable from the host, so "nothing arrived" means
"blocked". Addresses outside this machine (the cloud metadata service,
10.0.0.1, 8.8.8.8) are never sent traffic: the test reads the rules instead.

The engine here uses a network pool of its own, so the rules it installs are
the test's and are removed afterwards; the site's are never touched.
"""

from __future__ import annotations

import ipaddress
import shlex
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from workspaces.engine import ContainerSpec, WorkspaceSpec, names
from workspaces.engine.docker_backend import DockerBackend
from workspaces.engine.egress import EgressError, EgressFirewall, chain_tag

from .conftest import DESKTOP, IDE, PASSWORD, PREFIX, SOCKET_ROOT, VIEW_PASSWORD, docker, inspect, prefixed

POOL = "172.31.192.0/20"  # not the default pool: these rules are the test's own
NETNS = f"lt-egress-{PREFIX[-6:]}"
VETH = f"lteg{PREFIX[-6:]}"
NS_HOST, NS_PEER = "10.213.7.1", "10.213.7.2"


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)}: {result.stderr}")
    return result


class Listener:
    """A TCP listener on this host that records every peer that connects."""

    def __init__(self, host: str) -> None:
        self.sock = socket.create_server((host, 0))
        self.port = self.sock.getsockname()[1]
        self.peers: list[str] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, peer = self.sock.accept()
            except OSError:
                return
            self.peers.append(peer[0])
            conn.close()

    def close(self) -> None:
        self.sock.close()


def can_reach(engine: DockerBackend, workspace_id: str, address: str, port: int) -> bool:
    """Whether the workspace's IDE, as its student, opens a TCP connection to address:port."""
    probe = f"exec 3<>/dev/tcp/{address}/{port} && echo OPEN"
    code, out = engine.exec(workspace_id, "ide", ["timeout", "5", "bash", "-c", probe])
    return code == 0 and b"OPEN" in out


def connect_from_host(address: str, port: int) -> None:
    with socket.create_connection((address, port), timeout=5):
        pass


def gateway(engine: DockerBackend, workspace_id: str) -> str:
    info = inspect("network", names.network(engine.prefix, workspace_id))
    return info["IPAM"]["Config"][0].get("Gateway") or str(
        next(ipaddress.ip_network(info["IPAM"]["Config"][0]["Subnet"]).hosts())
    )


def app_address(engine: DockerBackend, workspace_id: str) -> str:
    info = inspect("container", names.container(engine.prefix, workspace_id, "ide"))
    return next(iter(info["NetworkSettings"]["Networks"].values()))["IPAddress"]


@pytest.fixture(scope="module")
def engine() -> Iterator[DockerBackend]:
    engine = DockerBackend(prefix=PREFIX, socket_root=str(SOCKET_ROOT), network_pool=POOL)
    engine.api.ping()
    yield engine
    for workspace_id in engine.list_workspaces():
        engine.remove(workspace_id)
    for volume in prefixed("volume"):  # the data volumes these tests made
        docker("volume", "rm", "-f", volume, check=False)
    assert engine.egress is not None
    engine.egress.remove()  # the test's pool only


@pytest.fixture(scope="module")
def private_peer() -> Iterator[str]:
    """A network namespace on 10.213.7.0/30, routed by this host: a private network
    that is not Docker's (so Docker's own isolation of its bridges says nothing of it)."""
    sh("ip", "netns", "add", NETNS)
    try:
        sh("ip", "link", "add", VETH, "type", "veth", "peer", "name", "eth0", "netns", NETNS)
        sh("ip", "addr", "add", f"{NS_HOST}/30", "dev", VETH)
        sh("ip", "link", "set", VETH, "up")
        for args in (
            ["addr", "add", f"{NS_PEER}/30", "dev", "eth0"],
            ["link", "set", "eth0", "up"],
            ["link", "set", "lo", "up"],
            ["route", "add", "default", "via", NS_HOST],
        ):
            sh("ip", "netns", "exec", NETNS, "ip", *args)
        yield NS_PEER
    finally:
        sh("ip", "netns", "del", NETNS, check=False)
        sh("ip", "link", "del", VETH, check=False)


@pytest.fixture
def peer_listener(private_peer: str) -> Iterator[tuple[int, Callable[[], list[str]]]]:
    """A listener inside the namespace; the callable returns the peers it logged."""
    port = 47013
    code = (
        "import socket,sys\n"
        f"s=socket.create_server(('{private_peer}',{port}))\n"
        "print('ready',flush=True)\n"
        "while True:\n"
        "    c,a=s.accept(); print(a[0],flush=True); c.close()\n"
    )
    proc = subprocess.Popen(
        ["ip", "netns", "exec", NETNS, "python3", "-c", code], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    try:
        yield port, lambda: [line.strip() for line in lines]
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def neighbour(engine: DockerBackend) -> Iterator[tuple[str, str, int]]:
    """Another student's workspace with a listener in its IDE: (workspace, address, port)."""
    spec = WorkspaceSpec(
        workspace_id="egressneighbour",
        owner="neighbour",
        owner_id=900_000_001,
        display=ContainerSpec("display", DESKTOP, "display"),
        apps=(ContainerSpec("ide", IDE),),
        vnc_password=PASSWORD,
        vnc_view_password=VIEW_PASSWORD,
    )
    engine.start(spec)
    port = 47014
    listen = (
        "import socket\n"
        f"s=socket.create_server(('0.0.0.0',{port}))\n"
        "while True:\n"
        "    c,a=s.accept(); open('/tmp/peers','a').write(a[0]+'\\n'); c.close()\n"
    )
    container = names.container(engine.prefix, spec.workspace_id, "ide")
    docker("exec", "-d", "-u", "1000:1000", container, "python3", "-c", listen)
    address = app_address(engine, spec.workspace_id)
    deadline = time.monotonic() + 10
    while True:  # the listener is up once the host can connect to it
        try:
            connect_from_host(address, port)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    yield spec.workspace_id, address, port
    engine.remove(spec.workspace_id)


def neighbour_peers(engine: DockerBackend, workspace_id: str) -> list[str]:
    _, out = engine.exec(workspace_id, "ide", ["sh", "-c", "cat /tmp/peers 2>/dev/null"])
    return out.decode().split()


def test_an_app_reaches_neither_the_host_nor_a_private_network_nor_another_workspace(
    engine, make_spec, neighbour, peer_listener
):
    spec = make_spec(workspace_id="egressstudent")
    engine.start(spec)
    try:
        gw = gateway(engine, spec.workspace_id)
        on_gateway, on_any = Listener(gw), Listener("0.0.0.0")
        try:
            # Each listener answers the host itself: it is up and reachable.
            connect_from_host(gw, on_gateway.port)
            connect_from_host("127.0.0.1", on_any.port)
            _wait_for(lambda: len(on_gateway.peers) == len(on_any.peers) == 1)

            assert not can_reach(engine, spec.workspace_id, gw, on_gateway.port)
            assert not can_reach(engine, spec.workspace_id, gw, on_any.port)
            # Another bridge's gateway is the host too (through INPUT, not FORWARD).
            assert not can_reach(engine, spec.workspace_id, gateway(engine, neighbour[0]), on_any.port)
            time.sleep(0.3)
            assert len(on_gateway.peers) == len(on_any.peers) == 1
        finally:
            on_gateway.close()
            on_any.close()

        port, peers = peer_listener
        connect_from_host(NS_PEER, port)
        _wait_for(lambda: peers() == [NS_HOST])  # the host's own connection arrived
        assert not can_reach(engine, spec.workspace_id, NS_PEER, port)
        time.sleep(0.3)
        assert peers() == [NS_HOST]

        neighbour_ws, neighbour_ip, neighbour_port = neighbour
        before = neighbour_peers(engine, neighbour_ws)
        assert before  # the host's connection, when the fixture waited for it
        assert not can_reach(engine, spec.workspace_id, neighbour_ip, neighbour_port)
        assert neighbour_peers(engine, neighbour_ws) == before

        # IPv6 is off in the app: no link-local path around these rules.
        _, out = engine.exec(spec.workspace_id, "ide", ["cat", "/proc/sys/net/ipv6/conf/all/disable_ipv6"])
        assert out.strip() == b"1"
    finally:
        engine.remove(spec.workspace_id)


def test_without_internet_the_network_is_internal_and_reaches_nothing(
    engine, make_spec, neighbour, peer_listener
):
    spec = make_spec(workspace_id="egressexam")
    engine.start(spec)
    network = names.network(engine.prefix, spec.workspace_id)
    try:
        assert inspect("network", network)["Internal"] is False
        engine.stop(spec.workspace_id)
        # The same workspace started again for an exam: the network follows the spec.
        exam = make_spec(
            workspace_id=spec.workspace_id, owner=spec.owner, owner_id=spec.owner_id, internet=False
        )
        engine.start(exam)
        assert inspect("network", network)["Internal"] is True
        container = names.container(engine.prefix, spec.workspace_id, "ide")
        assert list(inspect("container", container)["NetworkSettings"]["Networks"]) == [network]
        # Nothing leaves its subnet: Docker drops it (read from the rules, no traffic sent).
        info = inspect("network", network)
        subnet = info["IPAM"]["Config"][0]["Subnet"]
        rules = sh("iptables", "-w", "-S").stdout.splitlines()
        assert any(rule.endswith(f"! -d {subnet} -i br-{info['Id'][:12]} -j DROP") for rule in rules)

        gw = gateway(engine, spec.workspace_id)
        on_any = Listener("0.0.0.0")
        try:
            assert not can_reach(engine, spec.workspace_id, gw, on_any.port)
            time.sleep(0.3)
            assert on_any.peers == []
        finally:
            on_any.close()
        port, peers = peer_listener
        assert not can_reach(engine, spec.workspace_id, NS_PEER, port)
        neighbour_ws, neighbour_ip, neighbour_port = neighbour
        before = neighbour_peers(engine, neighbour_ws)
        assert not can_reach(engine, spec.workspace_id, neighbour_ip, neighbour_port)
        assert neighbour_peers(engine, neighbour_ws) == before
        time.sleep(0.3)
        assert peers() == []

        # And back: the exam is over, the network is an ordinary one again.
        engine.stop(spec.workspace_id)
        engine.start(spec)
        assert inspect("network", network)["Internal"] is False
        assert list(inspect("container", container)["NetworkSettings"]["Networks"]) == [network]
    finally:
        engine.remove(spec.workspace_id)


def _first_match(rules: list[str], address: str) -> str:
    """What the chain does with a new TCP connection to address (no traffic: the rules are read)."""
    target = ipaddress.ip_address(address)
    for rule in rules:
        words = shlex.split(rule)
        if "--ctstate" in words or "--physdev-is-bridged" in words:
            continue  # replies, and frames inside one bridge: not a new connection out
        if "-d" in words and target not in ipaddress.ip_network(words[words.index("-d") + 1]):
            continue
        if "--dport" in words:
            continue  # DNS to the host's resolver only
        return words[words.index("-j") + 1]
    return "RETURN"  # the end of the chain: on to Docker's rules, out to the internet


def test_the_rules_reject_metadata_and_private_addresses_and_let_the_internet_through(engine):
    engine.egress.ensure()
    tag = chain_tag(POOL)
    chain = f"LATTICE-EGRESS-{tag}"
    hook = sh("iptables", "-w", "-S", "DOCKER-USER").stdout.splitlines()
    assert f"-A DOCKER-USER -s {POOL} -j {chain}" in hook
    sh("iptables", "-w", "-C", "INPUT", "-s", POOL, "-j", f"LATTICE-INPUT-{tag}")
    rules = [line for line in sh("iptables", "-w", "-S", chain).stdout.splitlines() if line.startswith("-A")]
    assert _first_match(rules, "169.254.169.254") == "REJECT"  # the cloud metadata service
    assert _first_match(rules, "10.0.0.1") == "REJECT"
    assert _first_match(rules, "192.168.1.1") == "REJECT"
    assert _first_match(rules, "100.64.0.1") == "REJECT"
    assert _first_match(rules, "172.31.192.20") == "REJECT"  # another workspace of the pool
    assert _first_match(rules, "224.0.0.251") == "REJECT"
    assert _first_match(rules, "8.8.8.8") == "RETURN"
    inbound = sh("iptables", "-w", "-S", f"LATTICE-INPUT-{tag}").stdout.splitlines()
    assert inbound[-1] == f"-A LATTICE-INPUT-{tag} -j REJECT --reject-with icmp-admin-prohibited"


def test_rules_taken_away_are_put_back_at_the_next_start(engine, make_spec):
    tag = chain_tag(POOL)
    engine.egress.ensure()
    sh("iptables", "-w", "-D", "INPUT", "-s", POOL, "-j", f"LATTICE-INPUT-{tag}")
    sh("iptables", "-w", "-A", f"LATTICE-EGRESS-{tag}", "-j", "ACCEPT")
    assert engine.egress.missing()
    spec = make_spec(workspace_id="egressagain")
    engine.start(spec)
    try:
        assert engine.egress.missing() == []
        listing = sh("iptables", "-w", "-S").stdout.splitlines()
        assert listing.count(f"-A INPUT -s {POOL} -j LATTICE-INPUT-{tag}") == 1
        assert f"-A LATTICE-EGRESS-{tag} -j ACCEPT" not in listing
    finally:
        engine.remove(spec.workspace_id)


def test_a_workspace_with_apps_does_not_start_without_its_rules(engine, make_spec):
    def no_permission(argv, stdin=None):
        return subprocess.CompletedProcess(argv, 4, "", "iptables: Permission denied (you must be root).\n")

    refusing = DockerBackend(prefix=PREFIX, socket_root=str(SOCKET_ROOT), network_pool="172.31.208.0/20")
    refusing.egress = EgressFirewall("172.31.208.0/20", run=no_permission)
    refusing.egress._binary = "iptables"
    spec = make_spec(workspace_id="egressrefused")
    with pytest.raises(EgressError, match=r"Run the worker as root.*LATTICE_EGRESS_FIREWALL=site"):
        refusing.start(spec)
    # Refused before anything was made.
    assert docker("ps", "-a", "-q", "--filter", "label=lattice.workspace=egressrefused") == ""
    assert docker("network", "ls", "-q", "--filter", "label=lattice.workspace=egressrefused") == ""


def _wait_for(condition, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
