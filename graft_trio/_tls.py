"""Mutual TLS between peers: every connection is authenticated both ways.

Theory of operation
-------------------
A cluster has its own private certificate authority (``python -m
graft_trio.certs`` makes one). Each node holds the CA's certificate, its own
certificate and its key (:class:`TlsConfig`); :class:`~graft_trio.TlsNetwork`
wraps every TCP connection in a ``trio.SSLStream`` on both sides.

Rules:

1. **Both sides present a certificate, both sides verify.** TLS 1.2 at least;
   ``CERT_REQUIRED`` on the server side too, so a peer without a certificate
   from the cluster's CA never gets as far as its HELLO.
2. **Peers are identified by node id, not by address.** A node certificate
   carries its node id as a subjectAltName URI ``graft-node:<id>`` (the id
   percent-encoded, so any id fits an IA5String). Hostname verification is
   *off*: an address says where a peer is, not who it is, and addresses
   change (a node moves, a test binds an ephemeral port). Instead, once the
   peer's wire HELLO names the node it claims to be, the node checks the claim
   against the certificate (:func:`check_peer`) and drops the connection on a
   mismatch. The subject CN is written for people reading certificates and is
   never trusted.
3. **A stalled handshake cannot hold a task.** The TLS handshake runs inside a
   cancel scope (``TlsConfig.handshake_timeout``); every failure -- timeout,
   bad certificate, plaintext on a TLS port -- is a
   :class:`TlsHandshakeFailed`, a :class:`~graft_trio._wire.WireError`, so the
   node logs it with its reason, counts it (``Status.rejected``) and closes
   the connection like any other bad input.

K/V clients (``python -m graft_trio.kv``) use the same TLS settings; the
client port accepts any certificate issued by the cluster's CA (the tool
issues one with ``graft-client:<name>``), since a client claims no node id.
"""

from __future__ import annotations

import ssl
import urllib.parse
from pathlib import Path
from typing import ClassVar

import attrs
import trio

from graft_trio import _wire

#: The subjectAltName URI scheme that names a node: ``graft-node:<id>``.
NODE_URI_PREFIX = "graft-node:"
#: The subjectAltName URI scheme of a K/V client's certificate.
CLIENT_URI_PREFIX = "graft-client:"


class TlsError(_wire.WireError):
    """Base class of the TLS refusals of a peer connection."""

    reason: ClassVar[str] = "tls"


class TlsHandshakeFailed(TlsError):
    """The TLS handshake failed or timed out; the message says why.

    For example no certificate, a certificate from another CA, an expired
    certificate, or plaintext sent to a TLS port.
    """

    reason: ClassVar[str] = "tls_handshake"


class IdentityMismatch(TlsError):
    """A peer's HELLO claims a node id its certificate does not name."""

    reason: ClassVar[str] = "tls_identity"


class TlsConfigError(ValueError):
    """A :class:`TlsConfig` cannot be used: missing or unreadable files, a key
    that does not match its certificate, a non-positive timeout."""


def node_uri(node_id: str) -> str:
    """The subjectAltName URI that names ``node_id`` in a certificate."""
    return NODE_URI_PREFIX + urllib.parse.quote(node_id, safe="")


def client_uri(name: str) -> str:
    """The subjectAltName URI of a K/V client certificate."""
    return CLIENT_URI_PREFIX + urllib.parse.quote(name, safe="")


@attrs.frozen
class TlsConfig:
    """One node's (or client's) TLS settings: PEM files.

    Args:
        ca: the cluster CA's certificate; peers must present a certificate it
            issued.
        cert: this node's certificate (issued by ``ca``, naming the node id).
        key: the certificate's private key (unencrypted PEM).
        handshake_timeout: seconds a TLS handshake may take before the
            connection is dropped.

    Raises:
        TlsConfigError: a non-positive timeout (files are read by
            :meth:`server_context` / :meth:`client_context`).
    """

    ca: Path = attrs.field(converter=Path)
    cert: Path = attrs.field(converter=Path)
    key: Path = attrs.field(converter=Path)
    handshake_timeout: float = 5.0

    def __attrs_post_init__(self) -> None:
        if not self.handshake_timeout > 0:
            raise TlsConfigError(
                f"handshake_timeout must be positive, not {self.handshake_timeout!r}"
            )

    def server_context(self) -> ssl.SSLContext:
        """The context of the accepting side: requires and verifies the client's certificate."""
        return self._context(ssl.Purpose.CLIENT_AUTH)

    def client_context(self) -> ssl.SSLContext:
        """The context of the dialling side: presents our certificate, verifies the server's.

        Hostname checking is off on purpose (Rule 2): the node id is checked
        after the HELLO instead.
        """
        return self._context(ssl.Purpose.SERVER_AUTH)

    def _context(self, purpose: ssl.Purpose) -> ssl.SSLContext:
        server = purpose is ssl.Purpose.CLIENT_AUTH
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        # Before verify_mode: PROTOCOL_TLS_CLIENT refuses CERT_NONE-style changes
        # while check_hostname is on, and the identity is the node id (Rule 2).
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_REQUIRED
        try:
            ctx.load_verify_locations(cafile=str(self.ca))
            ctx.load_cert_chain(certfile=str(self.cert), keyfile=str(self.key))
        except (OSError, ssl.SSLError) as e:
            raise TlsConfigError(f"cannot load the TLS files ({self}): {e}") from e
        return ctx


def identities(peercert: dict[str, object] | None, prefix: str) -> list[str]:
    """The ids named by ``prefix`` URIs in a verified certificate (as ``getpeercert()``)."""
    if not peercert:
        return []
    found = []
    san = peercert.get("subjectAltName", ())
    if isinstance(san, tuple):
        for entry in san:
            if (
                isinstance(entry, tuple) and len(entry) == 2 and entry[0] == "URI"
                and isinstance(entry[1], str) and entry[1].startswith(prefix)
            ):
                found.append(urllib.parse.unquote(entry[1][len(prefix):]))
    return found


class TlsStream(trio.abc.Stream):
    """A ``trio.SSLStream`` whose handshake is bounded and whose failures are typed.

    The handshake happens on first use (or :meth:`handshake`); a failure or
    timeout raises :class:`TlsHandshakeFailed`. Afterwards the stream passes
    data straight through, and :attr:`identity` is the node id the peer's
    certificate names (``None`` when it names none, or more than one).
    """

    def __init__(self, ssl_stream: trio.SSLStream[trio.abc.Stream], timeout: float) -> None:
        self._ssl = ssl_stream
        self._timeout = timeout
        self._done = False
        self.identity: str | None = None
        #: Every ``graft-client:`` name in the certificate (for the K/V port's logs).
        self.client_names: list[str] = []

    async def handshake(self) -> None:
        """Run the TLS handshake now, within the timeout.

        Raises:
            TlsHandshakeFailed: it failed (the message has OpenSSL's reason) or
                timed out.
        """
        if self._done:
            return
        with trio.move_on_after(self._timeout):
            try:
                await self._ssl.do_handshake()
            except trio.BrokenResourceError as e:
                cause = e.__cause__
                why = getattr(cause, "reason", None) or str(cause) or "connection lost"
                raise TlsHandshakeFailed(f"TLS handshake failed: {why} ({cause})") from e
            self._done = True
            cert = self._ssl.getpeercert()
            nodes = identities(cert, NODE_URI_PREFIX)
            self.identity = nodes[0] if len(nodes) == 1 else None
            self.client_names = identities(cert, CLIENT_URI_PREFIX)
            return
        raise TlsHandshakeFailed(f"no TLS handshake within {self._timeout} s")

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if not self._done:
            await self.handshake()
        await self._ssl.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._ssl.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if not self._done:
            await self.handshake()
        return await self._ssl.receive_some(max_bytes)

    async def aclose(self) -> None:
        # A graceful close sends close_notify, which a stalled peer could
        # block; bounded, and trio closes the socket even when cancelled.
        with trio.move_on_after(self._timeout):
            await self._ssl.aclose()
        await trio.aclose_forcefully(self._ssl.transport_stream)


def check_peer(stream: trio.abc.Stream, claimed: str) -> None:
    """Check that a peer that said HELLO as ``claimed`` holds that node's certificate.

    A no-op for streams without TLS (plain TCP, memory streams in tests).

    Raises:
        IdentityMismatch: the certificate names another node, or none.
    """
    if not isinstance(stream, TlsStream):
        return
    if stream.identity != claimed:
        named = repr(stream.identity) if stream.identity is not None else "no single node id"
        raise IdentityMismatch(
            f"the peer says it is {claimed!r} but its certificate names {named}"
        )
