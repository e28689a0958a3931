"""graft_core embedded in plain asyncio: no trio, no graft_trio, about 100 lines.

The core is a pure ``step(state, event) -> (state, actions)``, so a runtime
only has to do four things, and this file does each with the standard library:

* **time**: the loop's clock in milliseconds; wait for the next event or
  ``state.next_deadline()``, whichever is first, then ``Tick``;
* **messages**: ``Send`` -> the peer's inbox (an ``asyncio.Queue`` after a
  small delay; a real deployment puts a TCP connection here, see graft_trio);
* **disk**: ``Persist`` -> one JSON line per write, fsynced in a worker thread,
  then ``PersistCompleted`` (graft_core holds every message that depends on
  the write until then, and never counts an entry that is not durable);
* **application**: ``Apply`` -> a list; ``ProposalAccepted`` -> the caller.

Run it: ``.venv/bin/python examples/asyncio_embed.py`` (three nodes, a few
appends, one node killed and restarted from its file).
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from pathlib import Path

from graft_core import (
    Apply,
    Config,
    DurableState,
    Entry,
    EntryKind,
    HardState,
    Message,
    MessageReceived,
    Persist,
    PersistCompleted,
    ProposalAccepted,
    ProposalRejected,
    Propose,
    Role,
    Send,
    Tick,
    start,
    step,
)


class AsyncioNode:
    def __init__(self, config: Config, directory: Path, cluster: dict[str, AsyncioNode]) -> None:
        self.config, self.cluster = config, cluster
        self.wal = directory / f"{config.node_id}.jsonl"
        # Messages, PersistCompleted seqs, Proposes, or None (stop).
        self.inbox: asyncio.Queue[Message | int | Propose | None] = asyncio.Queue()
        self.applied: list[bytes] = []
        self.proposed: dict[int, asyncio.Future[int]] = {}  # request id -> committed index
        self.accepted: dict[int, tuple[int, int]] = {}  # index -> (term, request id)
        self.requests = 0
        self.state = start(config, self.now(), self.recover())

    def now(self) -> int:
        return int(asyncio.get_running_loop().time() * 1000)

    def recover(self) -> DurableState:
        """Replay the write-ahead file: the term, the vote and the log survive a crash."""
        hard, log = HardState(), list[Entry]()
        lines = self.wal.read_text().splitlines() if self.wal.exists() else []
        for line in lines:
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                break  # a torn last line: that write never completed, nothing depended on it
            if r["hard"]:
                hard = HardState(*r["hard"])
            del log[min(r["truncate"] or r["first"], r["first"]) - 1:]
            log += [Entry(t, bytes.fromhex(d), EntryKind(k)) for t, k, d in r["entries"]]
        return DurableState(hard, tuple(log))

    def write(self, p: Persist) -> None:
        assert p.snapshot is None  # this example never takes snapshots
        hard = [p.hard_state.term, p.hard_state.voted_for] if p.hard_state else None
        entries = [[e.term, e.kind.value, e.data.hex()] for e in p.entries]
        record = {"hard": hard, "truncate": p.truncate_from, "first": p.first_index,
                  "entries": entries}
        with open(self.wal, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())

    async def run(self) -> None:
        """The driver: the only task that touches the core's state. Stops on None."""
        loop = asyncio.get_running_loop()
        while True:
            timeout = max(0, self.state.next_deadline() - self.now()) / 1000
            item: Message | int | Propose | Tick | None
            try:
                item = await asyncio.wait_for(self.inbox.get(), timeout)
            except TimeoutError:
                item = Tick(self.now())
            if item is None:
                return
            event = (item if isinstance(item, Tick | Propose) else
                     PersistCompleted(item, now=self.now()) if isinstance(item, int) else
                     MessageReceived(item, now=self.now()))
            self.state, actions = step(self.state, event)
            for a in actions:
                if isinstance(a, Send) and a.message.dst in self.cluster:
                    peer = self.cluster[a.message.dst]
                    loop.call_later(0.001, peer.inbox.put_nowait, a.message)  # 1 ms "network"
                elif isinstance(a, Persist):
                    # In order, off the event loop; graft_trio overlaps writes (group commit).
                    await asyncio.to_thread(self.write, a)
                    self.inbox.put_nowait(a.seq)
                elif isinstance(a, ProposalAccepted):
                    self.accepted[a.index] = (a.term, a.request_id)
                elif isinstance(a, ProposalRejected) and a.request_id in self.proposed:
                    self.proposed.pop(a.request_id).set_exception(RuntimeError(a.reason.value))
                elif isinstance(a, Apply):
                    for index, e in enumerate(a.entries, start=a.first_index):
                        if e.kind is EntryKind.NORMAL:
                            self.applied.append(e.data)
                        term, rid = self.accepted.pop(index, (None, None))
                        if rid in self.proposed:  # committed -- or overwritten (§5.3)?
                            future = self.proposed.pop(rid)
                            if term == e.term:
                                future.set_result(index)
                            else:
                                future.set_exception(RuntimeError("lost to a new leader"))

    async def append(self, data: bytes, timeout: float = 5.0) -> int:
        """Propose at this node (a follower forwards); the log index once applied here.

        A refused or overwritten proposal was never committed, so it is tried
        again. Raises TimeoutError after ``timeout`` s: the outcome is then
        unknown (say, it was forwarded to a leader that crashed).
        """
        async with asyncio.timeout(timeout):
            while True:
                self.requests += 1
                rid = self.requests
                self.proposed[rid] = asyncio.get_running_loop().create_future()
                self.inbox.put_nowait(Propose(rid, data))
                try:
                    return await self.proposed[rid]
                except RuntimeError:
                    await asyncio.sleep(0.05)  # no leader yet, or a new one: again
                finally:
                    self.proposed.pop(rid, None)


async def demo(directory: Path) -> dict[str, list[bytes]]:
    ids = ("a", "b", "c")
    cluster: dict[str, AsyncioNode] = {}
    config = {n: Config(n, ids, seed=k, heartbeat_interval=50, election_timeout=500)
              for k, n in enumerate(ids)}
    cluster.update({n: AsyncioNode(config[n], directory, cluster) for n in ids})
    tasks = {n: asyncio.create_task(cluster[n].run()) for n in ids}
    while not any(node.state.role is Role.LEADER for node in cluster.values()):
        await asyncio.sleep(0.01)
    for k in range(5):
        await cluster[ids[k % 3]].append(f"x={k}".encode())
    # Kill a follower (its memory is gone), append without it, restart it from its file.
    victim = next(n for n in ids if cluster[n].state.role is not Role.LEADER)
    cluster.pop(victim).inbox.put_nowait(None)
    await tasks.pop(victim)
    await next(iter(cluster.values())).append(f"while {victim} was down".encode())
    cluster[victim] = AsyncioNode(config[victim], directory, cluster)
    tasks[victim] = asyncio.create_task(cluster[victim].run())
    last = max(node.state.commit_index for node in cluster.values())
    while any(node.state.applied_index < last for node in cluster.values()):
        await asyncio.sleep(0.01)
    for node in cluster.values():
        node.inbox.put_nowait(None)
    await asyncio.gather(*tasks.values())
    return {n: node.applied for n, node in cluster.items()}


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as d:
        for node, entries in asyncio.run(demo(Path(d))).items():
            print(node, [e.decode() for e in entries])
