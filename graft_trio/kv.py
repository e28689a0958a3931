"""The replicated key/value store of the original proposal, shipped.

Every write is a log entry holding JSON ``{"key": ..., "value": ...}`` -- the
proposal's own example. Reads go through the log too (an entry
``{"get": key}``), so a get is never stale: it returns the value as of its own
position in the committed log (ReadIndex, a later issue, will make reads
cheaper). Every node applies the committed log to its own dictionary; after a
restart it rebuilds it from its durable log.

Run a server per node and talk to any of them::

    python -m graft_trio.kv serve --id a --listen 127.0.0.1:7001 --client 127.0.0.1:8001 \\
        --peer b=127.0.0.1:7002 --peer c=127.0.0.1:7003 --data /var/lib/graft/a
    python -m graft_trio.kv put --server 127.0.0.1:8001 greeting hello
    python -m graft_trio.kv get --server 127.0.0.1:8002 greeting

Client protocol: one JSON object per line over TCP, one JSON answer per line:
``{"op": "put", "key": k, "value": v}``, ``{"op": "get", "key": k}``,
``{"op": "status"}``, ``{"op": "dump"}`` (every applied key and the applied
index). Answers carry ``"ok": true`` or ``"ok": false, "error": ...``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

from graft_trio._node import CommittedEntry, Node, NodeError, Options

MAX_LINE = 1 << 20


class KVStateMachine:
    """The state machine: applies committed entries in order."""

    def __init__(self, node_id: str = "") -> None:
        self.node_id = node_id
        self.data: dict[str, Any] = {}
        self.applied = 0
        #: index -> the value one of *our* get entries read at that point of the log.
        self.reads: dict[int, Any] = {}

    def apply(self, entry: CommittedEntry) -> None:
        self.applied = entry.index
        try:
            doc = json.loads(entry.data)
        except ValueError:
            return  # not ours: the log is an ordered list of strings, any may appear
        if not isinstance(doc, dict):
            return
        if "get" in doc:
            if doc.get("from") == self.node_id:
                self.reads[entry.index] = self.data.get(str(doc["get"]))
                if len(self.reads) > 10_000:
                    # Gets replayed after a restart are never collected.
                    for index in sorted(self.reads)[:5_000]:
                        del self.reads[index]
        elif "key" in doc:
            self.data[str(doc["key"])] = doc.get("value")


class KVServer:
    """A graft node plus the key/value state machine and a client port."""

    def __init__(self, node: Node, client_address: tuple[str, int]) -> None:
        self.node = node
        self.client_address = client_address
        self.sm = KVStateMachine(node.node_id)
        node.on_commit(self.sm.apply)

    async def put(self, key: str, value: Any) -> int:
        r = await self.node.append(json.dumps({"key": key, "value": value}).encode())
        return r.index

    async def get(self, key: str) -> Any:
        r = await self.node.append(json.dumps({"get": key, "from": self.node.node_id}).encode())
        return self.sm.reads.pop(r.index, None)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(self.node.run)
            listeners = await trio.open_tcp_listeners(
                self.client_address[1], host=self.client_address[0]
            )
            task_status.started()
            await trio.serve_listeners(self._client, listeners)

    async def _client(self, stream: trio.SocketStream) -> None:
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
            if op == "status":
                s = self.node.status()
                return {
                    "ok": True, "id": s.node_id, "role": s.role.value, "term": s.term,
                    "leader": s.leader_id, "commit": s.commit_index, "applied": self.sm.applied,
                }
            if op == "dump":
                return {"ok": True, "applied": self.sm.applied, "data": self.sm.data}
        except KeyError as e:
            return {"ok": False, "error": f"missing field {e}"}
        except NodeError as e:
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


async def request(server: tuple[str, int], req: dict[str, Any], timeout: float = 10) -> Any:
    """Send one request to a server's client port; return its JSON answer."""
    with trio.fail_after(timeout):
        stream = await trio.open_tcp_stream(*server)
        async with stream:
            await stream.send_all(json.dumps(req).encode() + b"\n")
            buf = b""
            while b"\n" not in buf:
                data = await stream.receive_some(65536)
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
    for name in ("put", "get", "status", "dump"):
        c = sub.add_parser(name)
        c.add_argument("--server", type=parse_address, required=True)
        if name in ("put", "get"):
            c.add_argument("key")
        if name == "put":
            c.add_argument("value")
    args = p.parse_args(argv)
    if args.command == "serve":
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
        node = Node(
            args.id, args.listen, dict(args.peer), args.data, cluster_id=args.cluster,
            options=Options(heartbeat_interval=args.heartbeat, election_timeout=args.election),
        )
        try:
            trio.run(KVServer(node, args.client).run)
        except KeyboardInterrupt:
            return 0
        return 0
    req: dict[str, Any] = {"op": args.command}
    if args.command in ("put", "get"):
        req["key"] = args.key
    if args.command == "put":
        req["value"] = args.value
    answer = trio.run(request, args.server, req)
    print(json.dumps(answer))
    return 0 if answer.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
