"""Per-cluster PKI: a CA per cluster, node server certificates, client CSR signing.

Keys are ECDSA P-256: generation takes about a millisecond (RSA-2048 takes tens),
so a CA can be made inside the API transaction that creates its cluster, and
Docker, Go and OpenSSL clients all accept them.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_VALIDITY = datetime.timedelta(days=3650)
LEAF_VALIDITY = datetime.timedelta(days=825)
# Allow for clocks of clients that lag a little behind ours.
BACKDATE = datetime.timedelta(minutes=5)


class InvalidCSR(ValueError):
    """The CSR text is not a well-formed, self-signed PEM certificate request."""


@dataclass(frozen=True)
class KeyPair:
    cert_pem: str
    key_pem: str


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def new_ca(common_name: str) -> KeyPair:
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(_cert_pem(cert), _key_pem(key))


def _load_ca(ca: KeyPair):
    cert = x509.load_pem_x509_certificate(ca.cert_pem.encode())
    key = serialization.load_pem_private_key(ca.key_pem.encode(), password=None)
    return cert, key


def _leaf(ca: KeyPair, subject: x509.Name, public_key, usage, sans=None) -> str:
    ca_cert, ca_key = _load_ca(ca)
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + LEAF_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()), critical=False
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return _cert_pem(builder.sign(ca_key, hashes.SHA256()))


def sign_csr(ca: KeyPair, csr_pem: str) -> str:
    """Sign a client CSR, keeping its subject intact (CN=admin, O=system:masters stays)."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem.encode())
    except ValueError as exc:
        raise InvalidCSR(f"Invalid CSR: {exc}") from None
    if not csr.is_signature_valid:
        raise InvalidCSR("Invalid CSR: signature does not match its public key")
    return _leaf(ca, csr.subject, csr.public_key(), [ExtendedKeyUsageOID.CLIENT_AUTH])


def issue_server_cert(ca: KeyPair, common_name: str, ip_addresses=(), dns_names=()) -> KeyPair:
    key = _new_key()
    sans = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    sans += [x509.DNSName(name) for name in dns_names]
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = _leaf(
        ca, subject, key.public_key(),
        [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH], sans,
    )
    return KeyPair(cert, _key_pem(key))


def issue_client_cert(ca: KeyPair, common_name: str, organization: str | None = None) -> KeyPair:
    key = _new_key()
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    cert = _leaf(ca, x509.Name(attrs), key.public_key(), [ExtendedKeyUsageOID.CLIENT_AUTH])
    return KeyPair(cert, _key_pem(key))
