"""The replicated key/value store of the original proposal, shipped.

Every write is a log entry holding JSON ``{"key": ..., "value": ...}`` -- the
proposal's own example. Reads write nothing: a get waits for a read barrier
(ReadIndex, thesis §6.4 -- the leader confirms it still leads with one
heartbeat round) and then answers from the local dictionary, so it is never
stale, on any node. Every ``snapshot_every`` entries the server hands graft a
snapshot of its dictionary, so the log is compacted; after a restart, or when
it was too far behind, a node restores the snapshot and applies the rest.

Run a server per node and talk to any of them::

    python -m graft_trio.kv serve --id a --listen 127.0.0.1:7001 --client 127.0.0.1:8001 \\
        --peer b=127.0.0.1:7002 --peer c=127.0.0.1:7003 --data /var/lib/graft/a
    python -m graft_trio.kv put --server 127.0.0.1:8001 greeting hello
    python -m graft_trio.kv get --server 127.0.0.1:8002 greeting
    python -m graft_trio.kv cas --server 127.0.0.1:8003 greeting hi --expected hello

Client protocol: one JSON object per line over TCP, one JSON answer per line:
``{"op": "put", "key": k, "value": v}``, ``{"op": "get", "key": k}``,
``{"op": "cas", "key": k, "expected": e, "value": v}`` (answers ``"swapped"``:
whether the key held ``e`` -- ``null`` for an absent key -- and now holds ``v``),
``{"op": "status"}``, ``{"op": "dump"}`` (every applied key and the applied
index), and at the leader ``{"op": "add_learner", "id": i, "address": "h:p"}``,
``{"op": "add_voter", "id": i}``, ``{"op": "remove", "id": i}``,
``{"op": "transfer", "to": i}``. Answers carry ``"ok": true`` or
``"ok": false, "error": ...``.

With ``--tls-ca CA --tls-cert CERT --tls-key KEY`` (made by ``python -m
graft_trio.certs``), ``serve`` speaks mutual TLS to its peers and on its client
port, and a client command connects over TLS (see ``graft_trio/_tls.py``).

A new node joins a running cluster with ``serve --join`` (its ``--peer`` options
are the current members); then, at the leader, ``add-learner`` it, wait for it
to catch up, and ``add-voter`` it.
"""

from __future__ import annotations

import argparse
import json
import logging
import secrets
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import trio

from graft_trio._node import CommittedEntry, Node, NodeError, Options, SnapshotRestored
from graft_trio._tls import (
    NODE_URI_PREFIX,
    IdentityMismatch,
    TlsConfig,
    TlsConfigError,
    TlsError,
    TlsHandshakeFailed,
    TlsStream,
    identities,
)

log = logging.getLogger("graft_trio.kv")

MAX_LINE = 1 << 20


class OutcomeUnknown(Exception):
    """A cas committed, but its verdict was not observed here: it may or may not have swapped."""


class KVStateMachine:
    """The state machine: applies committed entries in order.

    A put entry is ``{"key": k, "value": v}``; a compare-and-set entry is
    ``{"op": "cas", "key": k, "expected": e, "value": v, "token": t}``. The
    comparison happens here, at apply, not when the cas is proposed: every
    node applies the same entries in the same order, so every node reaches
    the same verdict (Raft §5.3, state machine safety), and a cas is atomic
    with respect to every other write without any lock.
    """

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.applied = 0

    def apply(self, entry: CommittedEntry) -> tuple[str, bool] | None:
        """Apply one committed entry.

        Returns:
            For a cas entry, its token and whether it swapped; otherwise ``None``.
        """
        self.applied = entry.index
        try:
            doc = json.loads(entry.data)
        except ValueError:
            return None  # not ours: the log is an ordered list of strings, any may appear
        if not isinstance(doc, dict) or "key" not in doc:
            return None
        key = str(doc["key"])
        if doc.get("op") == "cas":
            # Same JSON type and value: 1, 1.0 and true are different values
            # here (Python's == would call them equal). null matches a key that
            # is absent or holds null.
            current, expected = self.data.get(key), doc.get("expected")
            swapped = type(current) is type(expected) and current == expected
            if swapped:
                self.data[key] = doc.get("value")
            return str(doc.get("token")), swapped
        self.data[key] = doc.get("value")
        return None

    def snapshot(self) -> bytes:
        return json.dumps({"applied": self.applied, "data": self.data}, sort_keys=True).encode()

    def restore(self, index: int, data: bytes) -> None:
        doc = json.loads(data)
        self.data = dict(doc["data"])
        self.applied = index


class KVServer:
    """A graft node plus the key/value state machine and a client port.

    Args:
        node: the graft node (not started yet).
        client_address: where clients connect.
        snapshot_every: hand graft a snapshot after this many applied entries.
        tls: serve clients over mutual TLS: a client must present a
            certificate from this CA (any name; see ``graft_trio/_tls.py``).

    Raises:
        TlsConfigError: the TLS files cannot be loaded.
    """

    def __init__(
        self,
        node: Node,
        client_address: tuple[str, int],
        *,
        snapshot_every: int = 10_000,
        tls: TlsConfig | None = None,
    ) -> None:
        self.node = node
        self.tls = tls
        self._client_ctx = tls.server_context() if tls is not None else None
        self.client_address = client_address
        self.snapshot_every = snapshot_every
        self.sm = KVStateMachine()
        self._snapshot_at = 0
        self._snapshotting = False
        self._restoring = False
        self._restored = trio.Event()
        self._buffered: list[CommittedEntry] = []
        self._nursery: trio.Nursery | None = None
        # cas tokens proposed here -> whether the cas swapped (None until applied).
        self._cas_outcomes: dict[str, bool | None] = {}
        node.on_commit(self._on_entry, on_snapshot=self._on_snapshot)

    def _apply(self, entry: CommittedEntry) -> None:
        outcome = self.sm.apply(entry)
        if outcome is not None and outcome[0] in self._cas_outcomes:
            self._cas_outcomes[outcome[0]] = outcome[1]

    def _on_entry(self, entry: CommittedEntry) -> None:
        if self._restoring:
            self._buffered.append(entry)
            return
        self._apply(entry)
        if (
            self.sm.applied - self._snapshot_at >= self.snapshot_every
            and not self._snapshotting
            and self._nursery is not None
        ):
            self._snapshotting = True
            self._nursery.start_soon(self._save, self.sm.applied, self.sm.snapshot())

    def _on_snapshot(self, marker: SnapshotRestored) -> None:
        # Raft §7: our dictionary is superseded by the snapshot; load it without
        # blocking the node, and hold back the entries that follow meanwhile.
        self._restoring = True
        self._buffered.clear()
        if self._nursery is not None:
            self._nursery.start_soon(self._restore)

    async def _restore(self) -> None:
        got = await self.node.read_snapshot()
        if got is not None:
            meta, data = got
            if meta.index > self.sm.applied:
                self.sm.restore(meta.index, data)
                self._snapshot_at = meta.index
        for entry in self._buffered:
            if entry.index > self.sm.applied:
                self._apply(entry)
        self._buffered.clear()
        self._restoring = False
        self._restored.set()
        self._restored = trio.Event()

    async def _save(self, index: int, data: bytes) -> None:
        try:
            await self.node.save_snapshot(index, data)
            self._snapshot_at = index
        except (ValueError, NodeError) as e:
            log.warning("%s: snapshot at %d not saved: %s", self.node.node_id, index, e)
        finally:
            self._snapshotting = False

    async def put(self, key: str, value: Any) -> int:
        r = await self.node.append(json.dumps({"key": key, "value": value}).encode())
        return r.index

    async def cas(self, key: str, expected: Any, value: Any) -> bool:
        """Set ``key`` to ``value`` iff it holds ``expected``; return whether it did.

        Raises:
            OutcomeUnknown: the entry committed but this node restored a
                snapshot covering it instead of applying it, so the verdict
                was never computed here.
            NodeError: as :meth:`Node.append`.
        """
        # The token finds our entry's verdict among everyone's applied cas entries.
        token = secrets.token_hex(8)
        doc = {"op": "cas", "key": key, "expected": expected, "value": value, "token": token}
        self._cas_outcomes[token] = None
        try:
            await self.node.append(json.dumps(doc).encode())
            # Committed entries reach _on_entry before append returns, unless a
            # snapshot restore is buffering them; then they are applied after it.
            while self._cas_outcomes[token] is None and self._restoring:
                await self._restored.wait()
            swapped = self._cas_outcomes[token]
        finally:
            del self._cas_outcomes[token]
        if swapped is None:
            raise OutcomeUnknown("the cas committed inside a snapshot; its verdict is unknown")
        return swapped

    async def get(self, key: str) -> Any:
        # Thesis §6.4: once the barrier's index is applied here, local state
        # reflects every write that completed before the get began.
        await self.node.read_barrier()
        while self._restoring:
            await self._restored.wait()
        return self.sm.data.get(key)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self.node.run)
            listeners = await trio.open_tcp_listeners(
                self.client_address[1], host=self.client_address[0]
            )
            task_status.started()
            handler = self._client if self.tls is None else self._tls_client
            await trio.serve_listeners(handler, listeners)

    async def _tls_client(self, stream: trio.SocketStream) -> None:
        assert self.tls is not None and self._client_ctx is not None
        tls_stream = TlsStream(
            trio.SSLStream(stream, self._client_ctx, server_side=True), self.tls.handshake_timeout
        )
        try:
            await tls_stream.handshake()
        except TlsHandshakeFailed as e:
            # A refused client must not end serve_listeners (and the server).
            log.warning("%s: refusing a client: %s", self.node.node_id, e)
            await tls_stream.aclose()
            return
        await self._client(tls_stream)

    async def _client(self, stream: trio.abc.Stream) -> None:
        buf = b""
        async with stream:
            while True:
                try:
                    data = await stream.receive_some(65536)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return
                if not data:
                    return
                buf += data
                if len(buf) > MAX_LINE and b"\n" not in buf:
                    await stream.send_all(b'{"ok": false, "error": "request too long"}\n')
                    return
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    answer = await self._answer(line)
                    try:
                        await stream.send_all(json.dumps(answer).encode() + b"\n")
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        return

    async def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            req = json.loads(line)
            op = req["op"]
        except (ValueError, KeyError, TypeError):
            return {"ok": False, "error": "bad request: expected a JSON object with 'op'"}
        try:
            if op == "put":
                return {"ok": True, "index": await self.put(str(req["key"]), req.get("value"))}
            if op == "get":
                return {"ok": True, "value": await self.get(str(req["key"]))}
            if op == "cas":
                swapped = await self.cas(str(req["key"]), req["expected"], req.get("value"))
                return {"ok": True, "swapped": swapped}
            if op == "status":
                s = self.node.status()
                return {
                    "ok": True, "id": s.node_id, "role": s.role.value, "term": s.term,
                    "leader": s.leader_id, "commit": s.commit_index, "applied": self.sm.applied,
                }
            if op == "dump":
                return {"ok": True, "applied": self.sm.applied, "data": self.sm.data}
            if op == "add_learner":
                m = await self.node.add_learner(str(req["id"]), parse_address(str(req["address"])))
                return {"ok": True, "voters": m.voters, "learners": m.learners}
            if op == "add_voter":
                address = parse_address(str(req["address"])) if req.get("address") else None
                m = await self.node.add_voter(str(req["id"]), address)
                return {"ok": True, "voters": m.voters, "learners": m.learners}
            if op == "remove":
                m = await self.node.remove(str(req["id"]))
                return {"ok": True, "voters": m.voters, "learners": m.learners}
            if op == "transfer":
                leader = await self.node.transfer_leadership(req.get("to"))
                return {"ok": True, "leader": leader}
        except KeyError as e:
            return {"ok": False, "error": f"missing field {e}"}
        except (argparse.ArgumentTypeError, ValueError) as e:
            return {"ok": False, "error": str(e)}
        except (NodeError, OutcomeUnknown) as e:
            return {"ok": False, "error": f"{type(e).__name__}: {e}"}
        return {"ok": False, "error": f"unknown op {op!r}"}


def parse_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def parse_peer(text: str) -> tuple[str, tuple[str, int]]:
    name, sep, addr = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected ID=HOST:PORT, got {text!r}")
    return name, parse_address(addr)


async def request(
    server: tuple[str, int], req: dict[str, Any], timeout: float = 10,
    *, tls: TlsConfig | None = None,
) -> Any:
    """Send one request to a server's client port; return its JSON answer.

    Args:
        tls: connect over mutual TLS with this CA, certificate and key. The
            server's certificate must come from the CA *and* name a node id
            (a ``graft-node:`` URI): a K/V server is a node, and a K/V
            client's certificate must not pass for one. Nothing is sent
            before both checks pass.

    Raises:
        TlsHandshakeFailed: the TLS handshake failed.
        IdentityMismatch: the server's certificate names no node id (for
            example, another client's certificate); the request was not sent.
        ConnectionError: the server closed or broke the connection (a TLS
            server refusing our certificate does so after the handshake).
        TlsConfigError: the TLS files cannot be loaded.
    """
    ctx = tls.client_context() if tls is not None else None
    with trio.fail_after(timeout):
        stream: trio.abc.Stream = await trio.open_tcp_stream(*server)
        ssl_stream: trio.SSLStream[trio.abc.Stream] | None = None
        if tls is not None and ctx is not None:
            ssl_stream = trio.SSLStream(stream, ctx, server_hostname=None)
            stream = TlsStream(ssl_stream, tls.handshake_timeout)
        async with stream:
            if isinstance(stream, TlsStream):
                assert ssl_stream is not None
                # Authenticate the server before any byte of the request leaves.
                await stream.handshake()
                if not identities(ssl_stream.getpeercert(), NODE_URI_PREFIX):
                    raise IdentityMismatch(
                        f"the server at {server[0]}:{server[1]} presented a certificate that "
                        "names no node id (not a graft node's certificate); request not sent"
                    )
            await stream.send_all(json.dumps(req).encode() + b"\n")
            buf = b""
            while b"\n" not in buf:
                try:
                    data = await stream.receive_some(65536)
                except trio.BrokenResourceError as e:
                    raise ConnectionError(f"the server broke the connection: {e.__cause__}") from e
                if not data:
                    raise ConnectionError("the server closed the connection")
                buf += data
            return json.loads(buf.split(b"\n", 1)[0])


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m graft_trio.kv", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run one node of the store")
    s.add_argument("--id", required=True)
    s.add_argument("--listen", type=parse_address, required=True, help="peer address")
    s.add_argument("--client", type=parse_address, required=True, help="client address")
    s.add_argument("--peer", type=parse_peer, action="append", default=[])
    s.add_argument("--data", type=Path, required=True)
    s.add_argument("--cluster", default="graft-kv")
    s.add_argument("--heartbeat", type=float, default=0.05)
    s.add_argument("--election", type=float, default=0.5)
    s.add_argument("--join", action="store_true", help="join a running cluster")
    s.add_argument("--snapshot-every", type=int, default=10_000)
    _add_tls_arguments(s)
    for name in ("put", "get", "cas", "status", "dump", "add-learner", "add-voter", "remove",
                 "transfer"):
        c = sub.add_parser(name)
        c.add_argument("--server", type=parse_address, required=True)
        _add_tls_arguments(c)
        if name in ("put", "get", "cas"):
            c.add_argument("key")
        if name in ("put", "cas"):
            c.add_argument("value")
        if name == "cas":
            # The expected value, or --absent: swap only if the key is absent (or null).
            expect = c.add_mutually_exclusive_group(required=True)
            expect.add_argument("--expected")
            expect.add_argument("--absent", action="store_true")
        if name in ("add-learner", "add-voter", "remove"):
            c.add_argument("id")
        if name in ("add-learner", "add-voter"):
            c.add_argument("address", nargs="?" if name == "add-voter" else None)
        if name == "transfer":
            c.add_argument("to", nargs="?")
    args = p.parse_args(argv)
    try:
        tls = _tls_config(args)
    except TlsConfigError as e:
        p.error(str(e))
    if args.command == "serve":
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
        node = Node(
            args.id, args.listen, dict(args.peer), args.data, cluster_id=args.cluster,
            options=Options(heartbeat_interval=args.heartbeat, election_timeout=args.election),
            joining=args.join, tls=tls,
        )
        try:
            server = KVServer(node, args.client, snapshot_every=args.snapshot_every, tls=tls)
            trio.run(server.run)
        except KeyboardInterrupt:
            return 0
        return 0
    req: dict[str, Any] = {"op": args.command.replace("-", "_")}
    if args.command in ("put", "get", "cas"):
        req["key"] = args.key
    if args.command in ("put", "cas"):
        req["value"] = args.value
    if args.command == "cas":
        req["expected"] = None if args.absent else args.expected
    if args.command in ("add-learner", "add-voter", "remove"):
        req["id"] = args.id
    if args.command in ("add-learner", "add-voter") and args.address:
        req["address"] = args.address
    if args.command == "transfer" and args.to:
        req["to"] = args.to
    try:
        answer = trio.run(partial(request, args.server, req, tls=tls))
    except (OSError, TlsError, TlsConfigError) as e:
        print(json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}"}))
        return 1
    print(json.dumps(answer))
    return 0 if answer.get("ok") else 1


def _add_tls_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("mutual TLS (all three, or none; see python -m graft_trio.certs)")
    g.add_argument("--tls-ca", type=Path, help="the cluster CA's certificate (PEM)")
    g.add_argument("--tls-cert", type=Path, help="this node's or client's certificate (PEM)")
    g.add_argument("--tls-key", type=Path, help="its private key (PEM)")


def _tls_config(args: argparse.Namespace) -> TlsConfig | None:
    given = [args.tls_ca, args.tls_cert, args.tls_key]
    if all(x is None for x in given):
        return None
    if any(x is None for x in given):
        raise TlsConfigError("--tls-ca, --tls-cert and --tls-key go together")
    tls = TlsConfig(args.tls_ca, args.tls_cert, args.tls_key)
    tls.client_context()  # fail now, with a usage error, if the files do not load
    return tls


if __name__ == "__main__":
    sys.exit(main())
