"""The cluster's certificates (pyvz.cluster.pki) and cluster.conf (pyvz.cluster.settings)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pyvz.cluster import pki
from pyvz.cluster.settings import check_address, check_name, conf_path, load, ready, save
from pyvz.errors import ClusterExit, ExitCode, VzError
from pyvz.paths import Paths


def _text(cert: Path) -> str:
    return subprocess.run(
        ["openssl", "x509", "-noout", "-text", "-in", str(cert)], capture_output=True, text=True, check=True
    ).stdout


def test_member_certificates_name_what_the_signer_says(tmp_path: Path) -> None:
    ca, member = tmp_path / "ca", tmp_path / "member"
    pki.make_ca(ca, "unit")
    before = pki.ca_cert(ca).read_text()
    pki.make_ca(ca, "unit")  # made once: a second call keeps the CA
    assert pki.ca_cert(ca).read_text() == before
    assert "CA:TRUE" in _text(pki.ca_cert(ca))
    for role, usages in (
        ("server", {"TLS Web Server Authentication", "TLS Web Client Authentication"}),
        ("peer", {"TLS Web Server Authentication", "TLS Web Client Authentication"}),
        ("client", {"TLS Web Client Authentication"}),
    ):
        csr = pki.request(member, role, "b")
        assert (pki.key(member, role).stat().st_mode & 0o777) == 0o600
        pki.install_cert(member, role, pki.sign(ca, csr, role, "b", "198.18.7.2"))
        text = _text(pki.cert(member, role))
        assert "DNS:b, IP Address:198.18.7.2, IP Address:127.0.0.1" in text
        found = {
            word.strip() for word in text.split("X509v3 Extended Key Usage:")[1].splitlines()[1].split(",")
        }
        assert found == usages, role
        verified = subprocess.run(
            ["openssl", "verify", "-CAfile", str(pki.ca_cert(ca)), str(pki.cert(member, role))],
            capture_output=True,
            text=True,
        )
        assert verified.returncode == 0, verified.stderr
    assert (pki.ca_key(ca).stat().st_mode & 0o777) == 0o600
    assert not list(member.glob(".*"))  # no temporary file left


def test_signing_needs_the_ca_key_and_a_real_request(tmp_path: Path) -> None:
    pki.make_ca(tmp_path / "ca", "unit")
    csr = pki.request(tmp_path / "m", "client", "m")
    pki.ca_key(tmp_path / "ca").unlink()
    with pytest.raises(VzError) as caught:
        pki.sign(tmp_path / "ca", csr, "client", "m", "198.18.7.3")
    assert caught.value.code == ClusterExit.PKI and "join through" in caught.value.message
    with pytest.raises(VzError) as caught:
        pki.install_cert(tmp_path / "m", "client", "not a certificate")
    assert caught.value.code == ClusterExit.PKI


def test_cluster_conf(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    with pytest.raises(VzError) as caught:
        load(paths)
    assert caught.value.code == ClusterExit.NOT_CONFIGURED
    save(paths, {"NODE_NAME": "a", "NODE_ADDRESS": "198.18.7.1", "ENDPOINTS": "https://198.18.7.1:2379"})
    settings = load(paths)
    assert (settings.ttl, settings.publish_interval, settings.client_port, settings.managed) == (
        10,
        5,
        2379,
        True,
    )
    assert settings.client_url == "https://198.18.7.1:2379" and settings.peer_url == "https://198.18.7.1:2380"
    assert settings.data_dir == tmp_path / "var/lib/vz/etcd"
    assert not ready(paths)
    save(paths, {"STATE": "ready", "LEASE_TTL": "1"})
    assert ready(paths)
    assert conf_path(paths).read_text().startswith("# This host's place")
    with pytest.raises(VzError) as caught:
        load(paths)
    assert caught.value.code == ExitCode.INVALID_CONFIG and "LEASE_TTL" in caught.value.message
    for bad in ("A", "-a", "a_b", "x" * 64):
        with pytest.raises(VzError):
            check_name(bad)
    for bad in ("0.0.0.0", "224.0.0.1", "1.2.3", "host"):
        with pytest.raises(VzError):
            check_address(bad)
    assert check_address("198.18.7.1") == "198.18.7.1"
