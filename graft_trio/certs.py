"""Make a private CA and certificates for a graft cluster's mutual TLS.

::

    python -m graft_trio.certs --out certs --nodes a,b,c [--clients client] [--days 365]

writes, in ``certs/``:

* ``ca.pem`` (give it to every node and client) and ``ca-key.pem`` (keep it
  offline: whoever holds it can mint members);
* ``<id>.pem`` / ``<id>-key.pem`` per node, naming the node id as the
  subjectAltName URI ``graft-node:<id>`` -- the identity a node's HELLO must
  match (see ``graft_trio/_tls.py``);
* ``<name>.pem`` / ``<name>-key.pem`` per K/V client (URI ``graft-client:<name>``).

If ``ca.pem`` and ``ca-key.pem`` already exist in the directory, that CA
issues the new certificates (add a node to a running cluster); otherwise a new
CA is made. Keys are ECDSA P-256, written unencrypted with mode 0600. File
names are the ids percent-encoded, so any id is a safe file name.

Needs the ``cryptography`` package (``pip install graft[tls]``).
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import urllib.parse
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from graft_trio._tls import client_uri, node_uri

#: Clock skew between machines that a fresh certificate tolerates.
_BACKDATE = datetime.timedelta(minutes=5)


class CertError(ValueError):
    """The request cannot be met: bad ids, a bad lifetime, an unreadable CA."""


def make_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def make_ca(
    common_name: str = "graft cluster CA", *, days: int = 3650
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-signed CA certificate (it may sign leaf certificates only) and its key."""
    _check_days(days)
    key = make_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def issue(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    uri: str,
    *,
    common_name: str,
    days: int = 365,
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A leaf certificate for one node or client, usable as TLS server and client.

    Args:
        uri: the subjectAltName URI naming it (``_tls.node_uri(id)`` for a node).
        common_name: the subject CN, for people (never trusted, see ``_tls``).
        days: the lifetime from now, unless ``not_before``/``not_after`` say.
    """
    _check_days(days)
    key = make_key()
    now = datetime.datetime.now(datetime.UTC)
    start = not_before if not_before is not None else now - _BACKDATE
    end = not_after if not_after is not None else now + datetime.timedelta(days=days)
    if not start < end:
        raise CertError(f"the certificate would end ({end}) before it starts ({start})")
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        # Every node both accepts and dials: it is a TLS server and a TLS client.
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def write_pair(
    out: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> tuple[Path, Path]:
    """Write ``<stem>.pem`` and ``<stem>-key.pem`` (mode 0600); return both paths."""
    cert_path = out / f"{stem}.pem"
    key_path = out / f"{stem}-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Created 0600 from the start, so the key is never readable by others.
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    os.chmod(key_path, 0o600)  # O_CREAT's mode does not apply to an existing file
    return cert_path, key_path


def file_stem(name: str) -> str:
    """The file name stem for a node id or client name (percent-encoded)."""
    return urllib.parse.quote(name, safe="")


def make_cluster(
    out: Path, nodes: Sequence[str], *, clients: Sequence[str] = ("client",), days: int = 365
) -> dict[str, tuple[Path, Path]]:
    """Write a CA (or reuse the one in ``out``) and a certificate per node and client.

    Returns:
        Each node id and client name -> its (certificate, key) paths; ``"ca"``
        is not among them (it is ``out / "ca.pem"``).

    Raises:
        CertError: no nodes, an empty or repeated name, a name that is both a
            node and a client, ``days`` < 1, or an unreadable existing CA.
    """
    _check_days(days)
    names = [*nodes, *clients]
    if not nodes:
        raise CertError("name at least one node")
    if any(not n for n in names):
        raise CertError("node ids and client names must not be empty")
    if len(set(names)) != len(names):
        raise CertError(f"a name is repeated among the nodes and clients: {names}")
    if "ca" in {file_stem(n) for n in names}:
        raise CertError("'ca' names the CA's files; pick another node or client name")
    out.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = _load_or_make_ca(out, days)
    made = {}
    for node in nodes:
        cert, key = issue(ca_cert, ca_key, node_uri(node), common_name=node, days=days)
        made[node] = write_pair(out, file_stem(node), cert, key)
    for client in clients:
        cert, key = issue(ca_cert, ca_key, client_uri(client), common_name=client, days=days)
        made[client] = write_pair(out, file_stem(client), cert, key)
    return made


def _load_or_make_ca(out: Path, days: int) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert_path, key_path = out / "ca.pem", out / "ca-key.pem"
    if not (cert_path.exists() and key_path.exists()):
        cert, key = make_ca(days=max(days, 3650))
        write_pair(out, "ca", cert, key)
        return cert, key
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        loaded = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as e:
        raise CertError(f"cannot read the CA in {out}: {e}") from e
    if not isinstance(loaded, ec.EllipticCurvePrivateKey):
        raise CertError(f"{key_path} is not an ECDSA key")
    return cert, loaded


def _check_days(days: int) -> None:
    if days < 1:
        raise CertError(f"days must be at least 1, not {days}")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m graft_trio.certs", description=__doc__.splitlines()[0]
    )
    p.add_argument("--out", type=Path, required=True, help="directory to write the PEM files to")
    p.add_argument("--nodes", required=True, help="comma-separated node ids, e.g. a,b,c")
    p.add_argument("--clients", default="client",
                   help="comma-separated K/V client names (default: client; '' for none)")
    p.add_argument("--days", type=int, default=365, help="certificate lifetime (default 365)")
    args = p.parse_args(argv)
    nodes = args.nodes.split(",")
    clients = args.clients.split(",") if args.clients else []
    try:
        made = make_cluster(args.out, nodes, clients=clients, days=args.days)
    except CertError as e:
        p.error(str(e))
    print(f"CA: {args.out / 'ca.pem'}")
    for name, (cert, key) in made.items():
        print(f"{name}: {cert} {key}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
