"""Host firewall rules for workspace networks: an app container reaches the
internet only.

Every workspace network is cut from one pool (DockerBackend.network_pool), so
one set of rules per host covers all of them, whatever workspaces come and go:

- forwarded traffic from the pool (it passes Docker's DOCKER-USER chain first)
  jumps to LATTICE-EGRESS-<tag>: replies and traffic inside one workspace's
  own bridge go on; DNS to the host's own resolvers goes on (Docker's embedded
  resolver at 127.0.0.11 forwards a container's queries from inside the
  container's namespace, so they look like the container's own); everything
  to a private, shared, link-local (the cloud metadata service), reserved or
  multicast range, and to the pool itself (another workspace), is rejected.
- traffic from the pool to the host itself never passes FORWARD: it is INPUT,
  whatever host address it aims at (the bridge's gateway, docker0, a public
  one). It jumps to LATTICE-INPUT-<tag>, which lets replies in and rejects the
  rest.

IPv6: workspace networks have none, and app containers switch it off in their
namespace (docker_backend.APP_SYSCTLS), so no link-local fe80:: route to the
host or another bridge exists.

Rules are written with iptables-restore --noflush: each of our chains is
replaced in one transaction and nothing of the site's is touched. The engine
checks them before each workspace network is used (one ``iptables -S``) and
installs what is missing; when it cannot (no root, no iptables) the workspace
does not start.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from .errors import EngineError

# Never reachable from a workspace, internet access or not (RFC 6890 and
# friends): "this network", private (RFC 1918), shared/CGNAT, loopback,
# link-local (169.254.169.254 is the cloud metadata service), IETF protocol
# assignments, the documentation nets, benchmarking, multicast and reserved
# (with the broadcast address).
BLOCKED_V4 = (
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
)
REJECT = ["-j", "REJECT", "--reject-with", "icmp-admin-prohibited"]
RESOLV_CONF = ("/etc/resolv.conf", "/run/systemd/resolve/resolv.conf")

Runner = Callable[[Sequence[str], str | None], subprocess.CompletedProcess]


class EgressError(EngineError):
    """The egress rules are not in place and cannot be put there."""


def _run(argv: Sequence[str], stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), input=stdin, capture_output=True, text=True, timeout=30, check=False)


def host_resolvers(paths: Sequence[str] = RESOLV_CONF) -> list[str]:
    """The IPv4 name servers Docker's embedded resolver forwards to (not loopback ones:
    Docker queries those from the host's own namespace)."""
    for path in paths:
        try:
            with open(path, encoding="utf-8") as fh:
                lines = fh.read().splitlines()
        except OSError:
            continue
        servers = []
        for line in lines:
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "nameserver":
                with contextlib.suppress(ValueError):
                    address = ipaddress.ip_address(parts[1])
                    if address.version == 4 and not address.is_loopback:
                        servers.append(str(address))
        if servers:
            return sorted(set(servers))
    return []


@dataclass(frozen=True)
class Ruleset:
    """What the host must have for one pool: two chains and the jumps to them."""

    pool: str
    forward_chain: str
    input_chain: str
    hook: str  # the chain forwarded traffic passes first: DOCKER-USER, else FORWARD
    forward_rules: tuple[str, ...]
    input_rules: tuple[str, ...]

    @property
    def jumps(self) -> tuple[str, ...]:
        return (
            f"-A {self.hook} -s {self.pool} -j {self.forward_chain}",
            f"-A INPUT -s {self.pool} -j {self.input_chain}",
        )

    def missing(self, listing: str) -> list[str]:
        """The rules of ours that ``iptables -S`` (its output: listing) lacks, in order."""
        have = set(listing.splitlines())
        want = [*self.jumps, *self.forward_rules, *self.input_rules]
        missing = [rule for rule in want if rule not in have]
        # A chain with rules of ours out of order, or with rules added to it,
        # is rewritten too: only the exact chain is the promise.
        for chain, rules in ((self.forward_chain, self.forward_rules), (self.input_chain, self.input_rules)):
            present = [line for line in listing.splitlines() if line.startswith(f"-A {chain} ")]
            if present != list(rules) and not missing:
                missing.append(f"(the order of {chain})")
        return missing


def chain_tag(pool: str) -> str:
    """Chains are named per pool, so a test on a pool of its own never touches the site's."""
    return hashlib.sha256(pool.encode()).hexdigest()[:8].upper()


def ruleset(pool: str, hook: str = "DOCKER-USER", resolvers: Sequence[str] = ()) -> Ruleset:
    network = ipaddress.ip_network(pool)
    if network.version != 4:
        raise EgressError(f"The workspace network pool {pool} is not IPv4.")
    pool = str(network)
    tag = chain_tag(pool)
    forward, inbound = f"LATTICE-EGRESS-{tag}", f"LATTICE-INPUT-{tag}"
    # Written exactly as `iptables -S` prints them, so a listing can be compared.
    rules = [
        f"-A {forward} -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN",
        # Containers of one workspace share a bridge and may talk to each other.
        f"-A {forward} -m physdev --physdev-is-bridged -j RETURN",
    ]
    for server in resolvers:
        rules += [
            f"-A {forward} -d {server}/32 -p udp -m udp --dport 53 -j RETURN",
            f"-A {forward} -d {server}/32 -p tcp -m tcp --dport 53 -j RETURN",
        ]
    blocked = list(BLOCKED_V4)
    if not any(network.subnet_of(ipaddress.ip_network(b)) for b in BLOCKED_V4):
        blocked.append(pool)  # other workspaces, when the pool is outside the private ranges
    rules += [f"-A {forward} -d {cidr} {' '.join(REJECT)}" for cidr in blocked]
    input_rules = (
        f"-A {inbound} -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN",
        f"-A {inbound} {' '.join(REJECT)}",
    )
    return Ruleset(pool, forward, inbound, hook, tuple(rules), input_rules)


class EgressFirewall:
    """Keeps one pool's rules in place on this host (needs root: CAP_NET_ADMIN)."""

    def __init__(self, pool: str, *, run: Runner = _run, lock_dir: str | None = None) -> None:
        self.pool = str(ipaddress.ip_network(pool))
        self._run = run
        self._lock = threading.Lock()
        self._lock_path = os.path.join(lock_dir or tempfile.gettempdir(), "lattice-egress.lock")
        self._binary: str | None = None

    # -- which iptables ---------------------------------------------------

    def binary(self) -> str:
        """The iptables Docker writes to: the one that has Docker's chains (nft or legacy)."""
        if self._binary is None:
            candidates = [b for b in ("iptables", "iptables-nft", "iptables-legacy") if shutil.which(b)]
            if not candidates:
                raise EgressError(
                    "Cannot keep workspaces off the host and private networks: iptables is not "
                    "installed. Install it (apt-get install iptables), or set "
                    "LATTICE_EGRESS_FIREWALL=site if this host's firewall does it."
                )
            found = [b for b in candidates if self._run([b, "-w", "-S", "DOCKER"], None).returncode == 0]
            self._binary = (found or candidates)[0]
        return self._binary

    def _iptables(self, *args: str) -> subprocess.CompletedProcess:
        return self._run([self.binary(), "-w", *args], None)

    def listing(self) -> str:
        result = self._iptables("-S")
        if result.returncode != 0:
            raise EgressError(self._cannot(result.stderr))
        return result.stdout

    def expected(self, listing: str | None = None) -> Ruleset:
        listing = self.listing() if listing is None else listing
        hook = "DOCKER-USER" if "-N DOCKER-USER" in listing.splitlines() else "FORWARD"
        return ruleset(self.pool, hook, host_resolvers())

    # -- check and install --------------------------------------------------

    def missing(self) -> list[str]:
        listing = self.listing()
        return self.expected(listing).missing(listing)

    def ensure(self) -> bool:
        """Install what is missing (idempotent); True when something was; EgressError when they cannot be in place.

        Nothing missing costs one `iptables -S`.
        """
        with self._lock:
            listing = self.listing()
            rules = self.expected(listing)
            if not rules.missing(listing):
                return False
            with self._host_lock():
                listing = self.listing()  # another process may have done it meanwhile
                if rules.missing(listing):
                    self._install(rules, listing)
            still = rules.missing(self.listing())
            if still:
                raise EgressError(
                    "Cannot keep workspaces off the host and private networks: these firewall rules "
                    f"did not stay in place: {'; '.join(still[:3])}."
                )
            return True

    def _install(self, rules: Ruleset, listing: str) -> None:
        have = set(listing.splitlines())
        lines = ["*filter", f":{rules.forward_chain} - [0:0]", f":{rules.input_chain} - [0:0]"]
        # With --noflush, naming a chain empties it: ours are rewritten whole,
        # in one transaction with the jumps; nothing else is touched.
        lines += [*rules.forward_rules, *rules.input_rules]
        for jump in rules.jumps:
            if jump not in have:
                lines.append(jump.replace("-A ", "-I ", 1).replace(" -s ", " 1 -s ", 1))
        lines.append("COMMIT")
        restore = f"{self.binary()}-restore"
        result = self._run([restore, "-w", "--noflush"], "\n".join(lines) + "\n")
        if result.returncode != 0:
            raise EgressError(self._cannot(result.stderr))

    def remove(self) -> None:
        """Take this pool's chains and jumps away (tests on a pool of their own; never the site's)."""
        with self._lock, self._host_lock():
            listing = self.listing()
            rules = self.expected(listing)
            for jump in rules.jumps:
                if jump in listing.splitlines():
                    self._iptables(*jump.replace("-A ", "-D ", 1).split())
            for chain in (rules.forward_chain, rules.input_chain):
                if f"-N {chain}" in listing.splitlines():
                    self._iptables("-F", chain)
                    self._iptables("-X", chain)

    @contextlib.contextmanager
    def _host_lock(self) -> Iterator[None]:
        """Two workers installing at once would each add the jumps."""
        try:
            fh = open(self._lock_path, "a")  # noqa: SIM115  (closed below)
        except OSError:
            yield
            return
        with fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    @staticmethod
    def _cannot(stderr: str) -> str:
        detail = (stderr or "").strip().splitlines()
        return (
            "Cannot keep workspaces off the host and private networks: the firewall rules could not "
            f"be read or written ({detail[-1] if detail else 'no output'}). Run the worker as root "
            "(it needs CAP_NET_ADMIN), or set LATTICE_EGRESS_FIREWALL=site if this host's firewall "
            "does it (README: Security)."
        )
