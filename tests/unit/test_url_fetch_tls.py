"""https URL rows: the certificate is verified against the URL's host name, though the
connection goes to the address the volunteer checked itself (a real TLS server on
loopback, with a certificate made here)."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

import pytest

from allmende.client.fetch.addresses import ALLOW_ALL
from allmende.client.fetch.http import fetch_url
from allmende.protocol.kinds.image_inputs import STATUS_LABELS
from tests.urlserver import url_server

x509 = pytest.importorskip("cryptography.x509")


def certificate(folder: Path, names: list[str], addresses: list[str]) -> tuple[Path, Path]:
    """A self-signed certificate (and its key) for `names` and `addresses`."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "allmende test")])
    now = datetime.datetime.now(datetime.UTC)
    alt = [x509.DNSName(n) for n in names] + [
        x509.IPAddress(ipaddress.ip_address(a)) for a in addresses
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / f"{names[0]}.pem", folder / f"{names[0]}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def contexts(cert: Path, key: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    return server, ssl.create_default_context(cafile=str(cert))


def test_https_is_fetched_and_verified_against_the_host_name(tmp_path: Path) -> None:
    cert, key = certificate(tmp_path, ["localhost"], ["127.0.0.1"])
    server_tls, trusting = contexts(cert, key)
    with url_server(server_tls) as server:
        by_address = fetch_url(server.url("/img/0"), ALLOW_ALL, tls=trusting)
        assert STATUS_LABELS[by_address.status] == "ok"
        assert by_address.data == server.images[0]
        by_name = server.url("/img/1").replace("127.0.0.1", "localhost")
        fetched = fetch_url(by_name, ALLOW_ALL, tls=trusting)
        assert STATUS_LABELS[fetched.status] == "ok" and fetched.data == server.images[1]
        # Not signed by a certificate authority this machine trusts: not fetched.
        assert STATUS_LABELS[fetch_url(server.url("/img/0"), ALLOW_ALL).status] == ("unreachable")


def test_a_certificate_for_another_name_is_unreachable(tmp_path: Path) -> None:
    cert, key = certificate(tmp_path, ["other.example"], [])
    server_tls, trusting = contexts(cert, key)
    with url_server(server_tls) as server:
        fetched = fetch_url(server.url("/img/0"), ALLOW_ALL, tls=trusting)
        assert STATUS_LABELS[fetched.status] == "unreachable"
        assert "certificate" in fetched.detail.lower() or "match" in fetched.detail.lower()
        assert server.requests == []
