"""$ROOT/etc/vz/cluster.conf: this host's place in its cluster, in vz.conf's KEY="value" form.

Written by `vzcluster init` / `join` (and removed by `leave`); its presence is what makes a
host a cluster member. Keys (defaults in brackets):

  CLUSTER_NAME     the cluster's name, also etcd's initial-cluster-token [pyvz]
  NODE_NAME        this host's name in the cluster [the short hostname]
  NODE_ADDRESS     the address this host's etcd member listens on and peers dial
  ENDPOINTS        etcd client URLs, comma-separated (every member's; failover in that order)
  ETCD_MANAGED     yes: pyvz runs this host's etcd member; no: an external etcd [yes]
  CLIENT_PORT      [2379]
  PEER_PORT        [2380]
  ETCD_DATA_DIR    the member's data, inside the root [/var/lib/vz/etcd]
  INITIAL_CLUSTER  NAME=PEER_URL,... for the member's first start
  INITIAL_STATE    new (init) or existing (join)
  CA_FILE, CERT_FILE, KEY_FILE   the CA and client certificate pyvz uses
                   [/etc/vz/cluster/ca.crt, client.crt, client.key]
  LEASE_TTL        seconds a host's lease lives without renewal [10]; renewed every TTL/3
  PUBLISH_INTERVAL seconds between two publications of the host's CTs [5]
  REQUEST_TIMEOUT  seconds an etcd request may take before the next endpoint is tried [5]
  FENCE_MARGIN     seconds past a lease's expiry by which a cut-off host has stopped its HA
                   and replicated CTs, and that HA and `vzctl recover` wait out [5]
  STATE            joining while init/join runs, ready once it completed (written last: a
                   host that is not ready holds only the leftovers of an interrupted attempt,
                   which the next init/join, or `leave --force`, sweeps)
"""

from __future__ import annotations

import ipaddress
import re
import socket
from pathlib import Path
from typing import NamedTuple

from pyvz.cluster import pki
from pyvz.cluster.etcd import Etcd, TlsFiles, parse_endpoints
from pyvz.config import ConfigFile
from pyvz.errors import ClusterExit, ExitCode, VzError
from pyvz.paths import Paths

NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
DEFAULT_TTL = 10
# Seconds past a lease's expiry by which its host has stopped the CTs others may start
# (pyvz.cluster.fence), and that the HA leader and `vzctl recover` wait before they do.
DEFAULT_FENCE_MARGIN = 5


def conf_path(paths: Paths) -> Path:
    return paths.etc_vz / "cluster.conf"


def cert_dir(paths: Paths) -> Path:
    return paths.etc_vz / "cluster"


def check_name(text: str) -> str:
    if not NAME_RE.match(text):
        raise VzError(
            ExitCode.INVALID_PARAMETER_VALUE,
            f"bad host name {text!r} (lower-case letters, digits and '-', at most 63)",
        )
    return text


def check_address(text: str) -> str:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise VzError(
            ExitCode.INVALID_PARAMETER_VALUE, f"bad address {text!r} (want an IP address)"
        ) from None
    if address.is_unspecified or address.is_multicast:
        raise VzError(ExitCode.INVALID_PARAMETER_VALUE, f"{text} cannot be a member's address")
    return str(address)


def default_name() -> str:
    short = socket.gethostname().split(".")[0].lower()
    return short if NAME_RE.match(short) else "host"


def url(address: str, port: int) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"https://{host}:{port}"


def _int(conf: ConfigFile, key: str, default: int, low: int, high: int) -> int:
    raw = conf.get(key)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise VzError(ExitCode.INVALID_CONFIG, f"{conf.path}: {key}={raw!r} is not a number in {low}..{high}")
    return int(raw)


class Settings(NamedTuple):
    paths: Paths
    cluster: str
    name: str
    address: str
    endpoints: tuple[str, ...]
    managed: bool
    client_port: int
    peer_port: int
    data_dir: Path
    initial_cluster: str
    initial_state: str
    tls: TlsFiles
    ttl: int
    publish_interval: int
    timeout: float
    fence_margin: int

    @property
    def client_url(self) -> str:
        return url(self.address, self.client_port)

    @property
    def peer_url(self) -> str:
        return url(self.address, self.peer_port)

    @property
    def cert_dir(self) -> Path:
        return cert_dir(self.paths)

    def client(self, timeout: float | None = None) -> Etcd:
        """A client of the cluster: this host's own member first, then the others."""
        first = [self.client_url] if self.managed else []
        return Etcd([*first, *self.endpoints], self.tls, self.timeout if timeout is None else timeout)


def exists(paths: Paths) -> bool:
    return conf_path(paths).exists()


def ready(paths: Paths) -> bool:
    """Whether init or join completed here (STATE="ready", written last)."""
    if not exists(paths):
        return False
    try:
        return ConfigFile.load(conf_path(paths), ExitCode.INVALID_CONFIG).get("STATE") == "ready"
    except VzError:
        return False


def load(paths: Paths) -> Settings:
    path = conf_path(paths)
    if not path.exists():
        raise VzError(
            ClusterExit.NOT_CONFIGURED, "this host is in no cluster (run `vzcluster init` or `join`)"
        )
    conf = ConfigFile.load(path, ExitCode.INVALID_CONFIG)
    directory = cert_dir(paths)

    def file(key: str, default: Path) -> Path:
        raw = conf.get(key)
        return paths.host(raw) if raw else default

    endpoints = conf.get("ENDPOINTS") or ""
    try:
        parsed = parse_endpoints(endpoints)
    except VzError as err:
        raise VzError(ExitCode.INVALID_CONFIG, f"{path}: ENDPOINTS: {err.message}") from None
    return Settings(
        paths=paths,
        cluster=conf.get("CLUSTER_NAME") or "pyvz",
        name=check_name(conf.get("NODE_NAME") or default_name()),
        address=conf.get("NODE_ADDRESS") or "",
        endpoints=parsed,
        managed=(conf.get("ETCD_MANAGED") or "yes").lower() == "yes",
        client_port=_int(conf, "CLIENT_PORT", 2379, 1, 65535),
        peer_port=_int(conf, "PEER_PORT", 2380, 1, 65535),
        data_dir=paths.host(conf.get("ETCD_DATA_DIR") or "/var/lib/vz/etcd"),
        initial_cluster=conf.get("INITIAL_CLUSTER") or "",
        initial_state=conf.get("INITIAL_STATE") or "new",
        tls=TlsFiles(
            file("CA_FILE", pki.ca_cert(directory)),
            file("CERT_FILE", pki.cert(directory, "client")),
            file("KEY_FILE", pki.key(directory, "client")),
        ),
        ttl=_int(conf, "LEASE_TTL", DEFAULT_TTL, 2, 3600),
        publish_interval=_int(conf, "PUBLISH_INTERVAL", 5, 1, 3600),
        timeout=float(_int(conf, "REQUEST_TIMEOUT", 5, 1, 120)),
        fence_margin=_int(conf, "FENCE_MARGIN", DEFAULT_FENCE_MARGIN, 2, 600),
    )


def save(paths: Paths, values: dict[str, str]) -> None:
    """Write cluster.conf whole (atomically), keeping what else it held."""
    path = conf_path(paths)
    conf = ConfigFile.load(path, ExitCode.INVALID_CONFIG) if path.exists() else ConfigFile(path)
    if not path.exists():
        conf = ConfigFile.parse("# This host's place in its pyvz cluster (see docs/cluster.md).\n", path)
    for key, value in values.items():
        conf.set(key, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    conf.write()
