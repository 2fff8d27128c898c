"""Certificates and contexts for the TLS tests, made in the test run (trustme, cryptography).

One CA per test process signs the leaf certificates; the names cover every loopback address
the tests use. Nothing here touches the system trust store: a client trusts exactly the
certificates a test gives it.
"""

from __future__ import annotations

import datetime
import functools
import ipaddress
import ssl

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

HOSTNAME = "localhost"
NAMES = (HOSTNAME, "127.0.0.1", "::1")


@functools.cache
def ca() -> trustme.CA:
    return trustme.CA()


@functools.cache
def _leaf() -> trustme.LeafCert:
    return ca().issue_cert(*NAMES)


@functools.cache
def _client_leaf() -> trustme.LeafCert:
    return ca().issue_cert("client@example.invalid", common_name="test client")


@functools.cache
def _expired_leaf() -> trustme.LeafCert:
    now = datetime.datetime.now(datetime.timezone.utc)
    return ca().issue_cert(
        *NAMES,
        not_before=now - datetime.timedelta(days=30),
        not_after=now - datetime.timedelta(days=1),
    )


def server_context(*, expired: bool = False, alpn: list[str] | None = None) -> ssl.SSLContext:
    """A server context with a CA-signed certificate for the loopback names."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    (_expired_leaf() if expired else _leaf()).configure_cert(context)
    if alpn:
        context.set_alpn_protocols(alpn)
    return context


def client_context(*, cert: bool = False, alpn: list[str] | None = None) -> ssl.SSLContext:
    """A client context that trusts the test CA only (and presents a client certificate)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca().configure_trust(context)
    if cert:
        _client_leaf().configure_cert(context)
    if alpn:
        context.set_alpn_protocols(alpn)
    return context


def mutual_server_context() -> ssl.SSLContext:
    """A server context that requires a client certificate signed by the test CA."""
    context = server_context()
    context.verify_mode = ssl.CERT_REQUIRED
    ca().configure_trust(context)
    return context


@functools.cache
def _self_signed_pem() -> tuple[bytes, bytes]:
    """A self-signed leaf (not a CA) for the loopback names: (certificate, key) as PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOSTNAME)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName(HOSTNAME),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def self_signed_server_context(tmp_path) -> ssl.SSLContext:
    cert, key = _self_signed_pem()
    cert_file, key_file = tmp_path / "self.pem", tmp_path / "self.key"
    cert_file.write_bytes(cert)
    key_file.write_bytes(key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return context


def self_signed_client_context() -> ssl.SSLContext:
    """A client that trusts the self-signed leaf itself."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.load_verify_locations(cadata=_self_signed_pem()[0].decode())
    return context
