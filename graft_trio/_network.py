"""How a node reaches its peers: real TCP, or an in-memory network for tests.

The node only needs to listen at its address and to open a byte stream to a
peer's address. Behind this small seam, tests swap TCP for
:class:`MemoryNetwork`, whose streams live in the trio run itself -- so a whole
cluster runs under ``trio.testing.MockClock`` and its elections take virtual,
not real, seconds.
"""

from __future__ import annotations

import errno
import ssl
from typing import Protocol

import trio
import trio.testing

from graft_trio import _tls

Address = tuple[str, int]


class Listener(Protocol):
    """A listening endpoint: accepts byte streams, knows its port."""

    port: int

    async def accept(self) -> trio.abc.Stream: ...

    async def aclose(self) -> None: ...


class Network(Protocol):
    async def listen(self, address: Address) -> Listener: ...

    async def connect(self, address: Address) -> trio.abc.Stream: ...


class _TcpListener:
    def __init__(self, listener: trio.SocketListener) -> None:
        self._listener = listener
        self.port: int = listener.socket.getsockname()[1]

    async def accept(self) -> trio.abc.Stream:
        return await self._listener.accept()

    async def aclose(self) -> None:
        await self._listener.aclose()


class TcpNetwork:
    """Real TCP (the default)."""

    async def listen(self, address: Address) -> Listener:
        listeners = await trio.open_tcp_listeners(address[1], host=address[0])
        for extra in listeners[1:]:
            await extra.aclose()
        return _TcpListener(listeners[0])

    async def connect(self, address: Address) -> trio.abc.Stream:
        return await trio.open_tcp_stream(*address)


class _TlsListener:
    def __init__(self, inner: Listener, tls: _tls.TlsConfig, ctx: ssl.SSLContext) -> None:
        self._inner = inner
        self._tls = tls
        self._ctx = ctx
        self.port = inner.port

    async def accept(self) -> trio.abc.Stream:
        # No handshake here: the accept loop must not wait on one peer. It
        # happens on the stream's first use, bounded by the handshake timeout.
        stream = await self._inner.accept()
        return _tls.TlsStream(
            trio.SSLStream(stream, self._ctx, server_side=True), self._tls.handshake_timeout
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


class TlsNetwork:
    """Mutual TLS over another network (real TCP unless ``inner`` says otherwise).

    Both sides present a certificate issued by the cluster CA and verify the
    other's (TLS 1.2 at least). Peers are identified by the node id in their
    certificate (subjectAltName URI ``graft-node:<id>``), which the node checks
    against the id the peer claims in its HELLO; hostname verification against
    the address is deliberately off -- an address is where a peer is, not who
    it is. See ``graft_trio/_tls.py``.

    Args:
        tls: the CA certificate, this node's certificate and key.
        inner: the network carrying the TLS bytes (default :class:`TcpNetwork`).

    Raises:
        TlsConfigError: the files cannot be loaded.
    """

    def __init__(self, tls: _tls.TlsConfig, inner: Network | None = None) -> None:
        self.tls = tls
        self._inner: Network = inner if inner is not None else TcpNetwork()
        # Built once, here, so a bad file fails at construction, not at the first peer.
        self._server_ctx = tls.server_context()
        self._client_ctx = tls.client_context()

    async def listen(self, address: Address) -> Listener:
        return _TlsListener(await self._inner.listen(address), self.tls, self._server_ctx)

    async def connect(self, address: Address) -> trio.abc.Stream:
        stream = await self._inner.connect(address)
        return _tls.TlsStream(
            trio.SSLStream(stream, self._client_ctx, server_hostname=None),
            self.tls.handshake_timeout,
        )


class _MemoryListener:
    def __init__(self, network: MemoryNetwork, address: Address) -> None:
        self._network = network
        self._address = address
        self.port = address[1]
        self._send, self._recv = trio.open_memory_channel[trio.abc.Stream](64)

    async def accept(self) -> trio.abc.Stream:
        return await self._recv.receive()

    async def aclose(self) -> None:
        self._network._listeners.pop(self._address, None)
        await self._send.aclose()


class MemoryNetwork:
    """An in-process network of memory streams, for tests on a MockClock.

    ``connect`` to an address nobody listens on fails like a refused TCP
    connection, so a node whose peer is down retries with backoff as over TCP.
    """

    def __init__(self) -> None:
        self._listeners: dict[Address, _MemoryListener] = {}

    async def listen(self, address: Address) -> Listener:
        if address in self._listeners:
            raise OSError(errno.EADDRINUSE, f"{address} is already in use")
        listener = _MemoryListener(self, address)
        self._listeners[address] = listener
        return listener

    async def connect(self, address: Address) -> trio.abc.Stream:
        listener = self._listeners.get(address)
        if listener is None:
            raise OSError(errno.ECONNREFUSED, f"nothing listens on {address}")
        ours, theirs = trio.testing.memory_stream_pair()
        try:
            listener._send.send_nowait(theirs)
        except (trio.WouldBlock, trio.ClosedResourceError) as e:
            raise OSError(errno.ECONNREFUSED, f"{address} refused the connection") from e
        return ours
