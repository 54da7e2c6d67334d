"""A throwaway certificate authority for tests of TLS connections."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LOOPBACK = IPv4Address("127.0.0.1")


@dataclass(frozen=True)
class Certificates:
    """PEM files of a test CA and of one certificate it signed."""

    ca: Path
    """The CA's certificate: what clients trust."""
    certificate: Path
    """The leaf certificate followed by the CA's (the chain a server sends)."""
    key: Path
    """The leaf's private key, PKCS#8, unencrypted."""
    bundle: Path
    """The private key then the chain in one file (Kafka's PEM key store)."""


def issue(directory: Path, common_name: str = "localhost") -> Certificates:
    """Create a CA and a certificate for 127.0.0.1 and localhost in `directory`.

    The certificate serves both ends of a TLS connection (serverAuth and
    clientAuth), is valid for a day and carries the loopback address and
    `localhost` as subject alternative names, which is what TLS clients check
    the host against (RFC 6125).
    """
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "crm-kpi test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(LOOPBACK)]
            ),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )

    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    chain_pem = cert.public_bytes(serialization.Encoding.PEM) + ca_pem
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    files = Certificates(
        ca=directory / "ca.pem",
        certificate=directory / "certificate.pem",
        key=directory / "key.pem",
        bundle=directory / "bundle.pem",
    )
    files.ca.write_bytes(ca_pem)
    files.certificate.write_bytes(chain_pem)
    files.key.write_bytes(key_pem)
    files.bundle.write_bytes(key_pem + chain_pem)
    return files
