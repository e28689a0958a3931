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
issues the new certificates (add a node to a running cluster; the key must be
the certificate's); if neither exists a new CA is made. If only one of them is
there (say the key is kept offline), the tool refuses rather than replace the
CA. Keys are ECDSA P-256, written unencrypted with mode 0600: each goes to a
new file (created 0600, never following a symlink) that then replaces the
target. Node certificates may act as TLS server and client; K/V client
certificates as TLS client only. File names are the ids percent-encoded, so
any id is a safe file name.

Needs the ``cryptography`` package (``pip install graft[tls]``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import secrets
import sys
import urllib.parse
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from graft_trio._tls import NODE_URI_PREFIX, client_uri, node_uri

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
    """A leaf certificate for one node or client.

    A node's certificate (``uri`` a ``graft-node:`` URI) is usable as TLS
    server and client: every node both accepts and dials. Any other (a K/V
    client's) is usable as a TLS client only, so it cannot pose as a server.

    Args:
        uri: the subjectAltName URI naming it (``_tls.node_uri(id)`` for a
            node, ``_tls.client_uri(name)`` for a K/V client).
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
    # Every node both accepts and dials: it is a TLS server and a TLS client.
    # Anything else only dials (a K/V client): no serverAuth, so it cannot
    # pass for a server.
    usages = (
        [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
        if uri.startswith(NODE_URI_PREFIX)
        else [ExtendedKeyUsageOID.CLIENT_AUTH]
    )
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
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
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
    """Write ``<stem>.pem`` and ``<stem>-key.pem`` (mode 0600); return both paths.

    The key never lands in an existing file: see :func:`write_private`.
    """
    cert_path = out / f"{stem}.pem"
    key_path = out / f"{stem}-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_private(key_path, pem)
    return cert_path, key_path


def write_private(path: Path, data: bytes) -> None:
    """Write secret ``data`` to ``path``, readable by its owner only (mode 0600).

    The data goes to a new file beside ``path``, created with ``O_EXCL |
    O_NOFOLLOW`` and mode 0600 (so it is nobody else's file, never reached
    through a symlink, and never readable by others, not even for a moment),
    is flushed to disk, and then replaces ``path`` with ``os.replace``: a
    symlink at ``path`` is replaced, not followed, and an existing file (of any
    mode or owner) is replaced, not written into.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(tmp, flags, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)  # exactly 0600, whatever the umask
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (best effort: not every platform can)."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


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
            node and a client, ``days`` < 1, or an existing CA that cannot be
            used: only one of ``ca.pem`` / ``ca-key.pem`` there, either
            unreadable, or a key that is not the certificate's.
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
    """The CA in ``out``, or a new one if ``out`` has neither of its files.

    Raises:
        CertError: only one of ``ca.pem`` and ``ca-key.pem`` is there (the
            existing CA is never replaced), either cannot be read, or the key
            is not the certificate's.
    """
    cert_path, key_path = out / "ca.pem", out / "ca-key.pem"
    # A symlink counts as there, even a dangling one: never replace what may be the CA.
    have_cert = cert_path.exists() or cert_path.is_symlink()
    have_key = key_path.exists() or key_path.is_symlink()
    if not have_cert and not have_key:
        cert, key = make_ca(days=max(days, 3650))
        write_pair(out, "ca", cert, key)
        return cert, key
    if not have_key:
        raise CertError(
            f"{cert_path} exists but {key_path} does not: to issue certificates from "
            "this CA, put its key there (it is not replaced by a new CA)"
        )
    if not have_cert:
        raise CertError(
            f"{key_path} exists but {cert_path} does not: restore the CA's certificate, "
            "or remove the key to make a new CA"
        )
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        loaded = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as e:
        raise CertError(f"cannot read the CA in {out}: {e}") from e
    if not isinstance(loaded, ec.EllipticCurvePrivateKey):
        raise CertError(f"{key_path} is not an ECDSA key")
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if loaded.public_key().public_bytes(*spki) != cert.public_key().public_bytes(*spki):
        raise CertError(f"{key_path} is not the key of the CA certificate {cert_path}")
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
