"""TLS for the coordinator: a self-signed certificate bound to the coordinator's key.

Volunteers and researchers pin one thing, the coordinator key's fingerprint. The coordinator
signs the sha256 of its TLS certificate with that key and reports it in GetCoordinatorInfo;
a client fetches the certificate in the handshake, trusts exactly that certificate for the
channel, and then checks the signature: a pinned key therefore pins the certificate too.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import ssl

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from allmende.protocol.errors import IntegrityError
from allmende.protocol.signing import CTX_TLS, verify

TLS_NAME = "allmende-coordinator"
VALID_DAYS = 3650


def make_self_signed(extra_names: tuple[str, ...] = ()) -> tuple[bytes, bytes]:
    """A new ECDSA P-256 key and a self-signed certificate: (key PEM, certificate PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, TLS_NAME)])
    now = datetime.datetime.now(datetime.UTC)
    names: list[x509.GeneralName] = [x509.DNSName(TLS_NAME), x509.DNSName("localhost")]
    for extra in extra_names:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(extra)))
        except ValueError:
            names.append(x509.DNSName(extra))
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


def cert_sha256(cert_pem: bytes) -> bytes:
    """sha256 of the certificate's DER encoding."""
    der = x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
    return hashlib.sha256(der).digest()


def server_name(cert_pem: bytes) -> str:
    """The name to check the certificate against: its first DNS name, else its CN."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        dns = sans.value.get_values_for_type(x509.DNSName)
        if dns:
            return str(dns[0])
    except x509.ExtensionNotFound:
        pass
    common = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(common[0].value) if common else TLS_NAME


def fetch_certificate(host: str, port: int, timeout_s: float = 5.0) -> bytes | None:
    """The server's certificate (PEM), or None when it does not speak TLS.

    Connection failures (refused, unreachable, timeout) raise OSError: the caller decides
    whether to retry. The certificate is not verified here; pinning does that afterwards.
    """
    try:
        pem = ssl.get_server_certificate((host, port), timeout=timeout_s)
    except (ssl.SSLError, ConnectionResetError):  # a plaintext server fails the handshake
        return None
    return pem.encode()


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_binding(
    public_key: bytes, cert_hash: bytes, signed_hash: bytes, signature: bytes
) -> None:
    """The certificate this channel uses must be the one the pinned key signed."""
    if signed_hash != cert_hash:
        raise IntegrityError(
            "TLS certificate is not the one the coordinator key vouches for (possible interception)"
        )
    verify(public_key, CTX_TLS, signed_hash, signature)
