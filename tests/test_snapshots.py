"""Log compaction and InstallSnapshot (Raft §7; thesis chapter 5), in the core.

Each test names the rule it checks. Clusters are driven by hand through
``graft_sim.LocalCluster``, whose disk model keeps exactly what the node
persisted and whose state machine is "the list of applied entries", so a
restored snapshot can be compared entry by entry with what a node applied.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graft_core import (
    Config,
    DurableState,
    Entry,
    EventError,
    HardState,
    InstallSnapshot,
    InstallSnapshotResponse,
    Membership,
    MessageReceived,
    Persist,
    PersistCompleted,
    RestoreSnapshot,
    Send,
    SendSnapshot,
    SnapshotMeta,
    SnapshotSaved,
    start,
    step,
)
from graft_sim import LocalCluster

IDS = ("a", "b", "c")


def lagging_cluster(
    entries: int, *, trailing: int = 0, chunk: int = 64
) -> tuple[LocalCluster, str, str]:
    """A cluster whose leader committed ``entries`` while one follower was cut off,
    then took a snapshot. Returns (cluster, leader, lagging follower)."""
    c = LocalCluster(IDS, snapshot_trailing_entries=trailing, snapshot_chunk_bytes=chunk)
    leader = c.elect()
    lagging = next(n for n in c.ids if n != leader)
    c.partition([lagging], [n for n in c.ids if n != lagging])
    for i in range(entries):
        c.propose(leader, b"v%d" % i)
    c.deliver_all()
    c.take_snapshot(leader)
    return c, leader, lagging


def test_snapshot_compacts_the_log_keeping_the_trailing_window() -> None:
    """Raft §7: a snapshot replaces the log prefix it covers; Config.snapshot_trailing_entries
    keeps a window before it for followers that are only slightly behind."""
    c = LocalCluster(IDS, snapshot_trailing_entries=10)
    leader = c.elect()
    for i in range(40):
        c.propose(leader, b"v%d" % i)
    c.deliver_all()
    state = c.nodes[leader]
    applied = state.applied_index
    meta = c.take_snapshot(leader)
    after = c.nodes[leader]
    assert meta == SnapshotMeta(applied, state.term, state.membership)
    assert after.snapshot == meta
    assert after.log.offset == applied - 10
    assert after.log.last_index == state.log.last_index
    assert after.log.slice(after.log.offset + 1, applied + 1) == state.log.slice(
        applied - 9, applied + 1
    )


def test_snapshot_of_unapplied_index_is_a_caller_error() -> None:
    """SnapshotSaved names an index the application applied; anything else is a caller bug."""
    c = LocalCluster(IDS)
    leader = c.elect()
    state = c.nodes[leader]
    with pytest.raises(EventError, match="applied"):
        step(state, SnapshotSaved(state.applied_index + 1))
    with pytest.raises(EventError, match="applied and in the log"):
        state.snapshot_meta(state.applied_index + 1)


def test_older_snapshot_saved_is_ignored() -> None:
    """A snapshot at or below the current one changes nothing (it covers less)."""
    c = LocalCluster(IDS)
    leader = c.elect()
    for i in range(5):
        c.propose(leader, b"v%d" % i)
    c.deliver_all()
    c.take_snapshot(leader)
    state = c.nodes[leader]
    assert state.snapshot is not None
    again, actions = step(state, SnapshotSaved(state.snapshot.index))
    assert again is state and actions == ()


@pytest.mark.parametrize("chunk", [16, 100, 1 << 20])
def test_lagging_follower_catches_up_by_chunked_snapshot(chunk: int) -> None:
    """Raft §7: a follower that needs compacted entries gets InstallSnapshot, in chunks of at
    most snapshot_chunk_bytes, restores its state machine from it and continues from the log."""
    c, leader, lagging = lagging_cluster(30, chunk=chunk)
    sent: list[InstallSnapshot] = []
    real_send = c._send_snapshot

    def spy(nid: str, a: SendSnapshot) -> None:
        assert a.max_bytes == chunk
        real_send(nid, a)
        sent.append(c.in_flight[-1])  # type: ignore[arg-type]

    c._send_snapshot = spy  # type: ignore[method-assign]
    c.heal()
    c.run(c.now + 1000)
    size = len(c.storage[leader].snapshot_data)
    assert all(len(m.data) <= chunk for m in sent)
    assert [m.offset for m in sent] == list(range(0, size, chunk)), "one pass, in order"
    assert sent[-1].done and not any(m.done for m in sent[:-1])
    assert c.restored[lagging] == [c.nodes[leader].snapshot]
    # Continue from the log afterwards: a new entry reaches every state machine.
    c.propose(leader, b"after")
    c.run(c.now + 1000)
    assert c.applied[lagging] == c.applied[leader]
    assert c.applied_data(lagging)[-1] == b"after"


def test_lost_chunk_resumes_where_the_follower_is() -> None:
    """A lost chunk is resent from the follower's acknowledged offset when it next answers
    a heartbeat: the transfer resumes rather than restarts (bounded retransmission)."""
    c, leader, lagging = lagging_cluster(30, chunk=32)
    c.heal()
    c.tick(c.next_deadline())  # heartbeat -> response -> probe -> snapshot
    offsets: list[int] = []
    lost = False
    for _ in range(200):
        if not c.in_flight:
            c.tick(c.next_deadline())
            continue
        for m in list(c.in_flight):
            if isinstance(m, InstallSnapshot):
                offsets.append(m.offset)
                if m.offset == 64 and not lost:
                    lost = True
                    c.in_flight.remove(m)
                    continue
            c.deliver(m)
        if c.restored[lagging]:
            break
    assert c.restored[lagging], "the transfer never finished"
    i = offsets.index(64)
    assert offsets[i + 1] == 64, f"resent from the lost offset, not from 0: {offsets}"
    assert offsets.count(0) == 1
    assert c.applied[lagging] == [x for x in c.applied[leader] if x[0] <= len(c.applied[lagging])]


def test_follower_crash_mid_transfer_restarts_it_from_zero() -> None:
    """A partial snapshot is not durable: after a crash the follower asks for offset 0."""
    c, leader, lagging = lagging_cluster(30, chunk=32)
    c.heal()
    c.tick(c.next_deadline())
    for _ in range(5):
        c.deliver_round()
    assert c.nodes[lagging].incoming is not None, "a transfer is under way"
    c.crash(lagging)
    c.restart(lagging)
    c.run(c.now + 3000)
    assert c.restored[lagging] == [c.nodes[leader].snapshot]
    assert c.applied[lagging] == c.applied[leader][: len(c.applied[lagging])]
    assert c.nodes[lagging].applied_index == c.nodes[leader].applied_index


def test_snapshot_older_than_commit_index_is_not_installed() -> None:
    """A follower never restores a snapshot that covers less than it has committed: that
    would move its state machine backwards (State Machine Safety, §5.4.3)."""
    c = LocalCluster(IDS)
    leader = c.elect()
    for i in range(10):
        c.propose(leader, b"v%d" % i)
    c.run(c.now + 500)
    follower = next(n for n in c.ids if n != leader)
    state = c.nodes[follower]
    old = SnapshotMeta(5, state.log.term_at(5) or 0, state.membership)
    msg = InstallSnapshot(state.term, leader, follower, old, 0, b"stale", True)
    new, actions = step(state, MessageReceived(msg))
    assert not any(isinstance(a, Persist | RestoreSnapshot) for a in actions)
    assert new.log == state.log and new.applied_index == state.applied_index
    (reply,) = [a.message for a in actions if isinstance(a, Send)]
    assert isinstance(reply, InstallSnapshotResponse)
    assert reply.done and reply.match_index == state.commit_index


@pytest.mark.parametrize("matching", [True, False])
def test_install_keeps_the_tail_only_if_it_holds_the_snapshot_entry(matching: bool) -> None:
    """Raft §7 (Figure 13, steps 6-7): if the follower's log has an entry with the snapshot's
    last index and term, the entries after it are kept; otherwise the whole log goes."""
    cfg = Config("b", IDS)
    terms = [1, 1, 2, 2, 2, 3]
    durable = DurableState(HardState(3), tuple(Entry(t, b"%d" % i) for i, t in enumerate(terms)))
    state = start(cfg, durable=durable)
    meta = SnapshotMeta(4, 2 if matching else 3, Membership(IDS))
    msg = InstallSnapshot(3, "a", "b", meta, 0, b"state", True)
    new, actions = step(state, MessageReceived(msg))
    (p,) = [a for a in actions if isinstance(a, Persist)]
    assert p.snapshot is not None and p.snapshot.meta == meta and p.snapshot.done
    assert new.log.offset == 4 and new.commit_index == 4
    if matching:
        assert new.log.last_index == 6 and new.log.slice(5, 7) == state.log.slice(5, 7)
        assert p.truncate_from is None
    else:
        assert new.log.last_index == 4
        assert p.truncate_from == 5
    # The acknowledgement waits for the install to be durable (Figure 2), and
    # the state machine is restored only then.
    assert not any(isinstance(a, Send | RestoreSnapshot) for a in actions)
    done, after = step(new, PersistCompleted(p.seq))
    assert after[0] == RestoreSnapshot(meta) or RestoreSnapshot(meta) in after
    replies = [a.message for a in after if isinstance(a, Send)]
    assert any(isinstance(r, InstallSnapshotResponse) and r.done for r in replies)
    assert done.snapshot == meta and done.applied_index == 4


def test_restart_restores_snapshot_then_applies_the_tail() -> None:
    """Restart from snapshot + log tail: RestoreSnapshot first, then Apply from the next index,
    ending with the state machine the node had before the crash."""
    c = LocalCluster(IDS)
    leader = c.elect()
    for i in range(20):
        c.propose(leader, b"v%d" % i)
    c.run(c.now + 500)
    follower = next(n for n in c.ids if n != leader)
    c.take_snapshot(follower, 12)
    before = list(c.applied[follower])
    c.crash(follower)
    c.restart(follower)
    assert c.restored[follower][-1].index == 12
    c.run(c.now + 500)
    assert c.applied[follower] == before
    assert c.nodes[follower].log.offset == 12


def test_new_leader_sends_the_snapshot_it_installed() -> None:
    """A node that installed a snapshot holds it durably and, once leader, sends it on to a
    follower that needs the compacted entries (here: one whose disk was wiped)."""
    c, leader, lagging = lagging_cluster(20, chunk=1 << 20)
    c.heal()
    c.run(c.now + 1000)
    assert c.restored[lagging]
    third = next(n for n in c.ids if n not in (leader, lagging))
    c.crash(leader)
    c.crash(third)
    c.storage[third] = type(c.storage[third])()
    c.restart(third)
    # Only the lagging node can win: the wiped one's log is empty (Raft §5.4.1).
    assert c.elect() == lagging
    assert c.nodes[lagging].log.offset > 0
    c.propose(lagging, b"next")
    c.run(c.now + 2000)
    assert c.restored[third] == [c.nodes[lagging].snapshot]
    assert c.applied[third] == c.applied[lagging]
    assert c.applied_data(third)[-1] == b"next"


@settings(max_examples=40, deadline=None)
@given(
    ops=st.lists(
        st.sampled_from(["propose", "snapshot", "cut", "heal", "crash", "tick"]),
        min_size=5, max_size=40,
    ),
    trailing=st.integers(0, 4),
    chunk=st.sampled_from([8, 64, 4096]),
    seed=st.integers(0, 3),
)
def test_state_machines_agree_with_snapshots_and_faults(
    ops: list[str], trailing: int, chunk: int, seed: int
) -> None:
    """State Machine Safety (Raft §5.4.3) with compaction: whatever mix of proposals,
    snapshots (at random nodes), partitions and crashes, every node's applied sequence is a
    prefix of every longer one, and after healing all converge."""
    c = LocalCluster(IDS, seed=seed, snapshot_trailing_entries=trailing,
                     snapshot_chunk_bytes=chunk)
    c.elect()
    for k, op in enumerate(ops, start=1):
        nid = c.ids[k % 3]
        if op == "propose" and nid not in c.down:
            c.propose(nid, b"p%d" % k)
        elif op == "snapshot" and nid not in c.down and c.nodes[nid].applied_index > 0:
            state = c.nodes[nid]
            if state.applied_index > (state.snapshot.index if state.snapshot else 0):
                c.take_snapshot(nid)
        elif op == "cut":
            c.partition([nid], [n for n in c.ids if n != nid])
        elif op == "heal":
            c.heal()
        elif op == "crash" and len(c.down) == 0:
            c.crash(nid)
        elif op == "tick":
            c.tick(c.next_deadline())
        c.deliver_all()
        runs = sorted((c.applied[n] for n in c.ids), key=len)
        for shorter, longer in itertools.pairwise(runs):
            assert longer[: len(shorter)] == shorter
    c.heal()
    for n in list(c.down):
        c.restart(n)
    c.propose(c.elect(), b"final")
    c.run(c.now + 5000)
    first = c.applied[c.ids[0]]
    assert all(c.applied[n] == first for n in c.ids)
    assert first[-1][1].data == b"final"
