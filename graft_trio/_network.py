"""How a node reaches its peers: real TCP, or an in-memory network for tests.

The node only needs to listen at its address and to open a byte stream to a
peer's address. Behind this small seam, tests swap TCP for
:class:`MemoryNetwork`, whose streams live in the trio run itself -- so a whole
cluster runs under ``trio.testing.MockClock`` and its elections take virtual,
not real, seconds.
"""

from __future__ import annotations

import errno
from typing import Protocol

import trio
import trio.testing

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
