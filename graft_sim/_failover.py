"""Leader failover trials: the Raft paper's Figure 16 experiment, in virtual time.

Ongaro & Ousterhout (USENIX ATC 2014, §9.3; thesis §9.4, "real-world
implementation on a LAN") repeatedly crashed the leader of a five-server
LogCabin cluster and timed how long the others took to detect the crash and
elect a new leader: from the crash until the other servers received the new
leader's first heartbeat. The set-up, reproduced here with the real
``graft_core.step``:

* five servers, broadcast time (network round trip plus a disk write) of
  roughly 15 ms: here each message takes a one-way latency drawn uniformly
  from ``one_way_ms`` and each write to disk (term, vote, entries -- Raft
  Figure 2's "before responding to RPCs") ``disk_ms``, one write at a time
  per server (group commit of whatever queued meanwhile);
* the leader crashed at a uniformly random moment within its heartbeat
  interval, which was half the minimum election timeout, right after a
  heartbeat broadcast ("it synchronized the old leader's heartbeat RPCs
  before causing the old leader to exit") -- so the followers' election
  timers start at about the same time, the worst case for split votes;
* servers with different log lengths, so two of the four survivors cannot
  win (§5.4.1's up-to-date check): the two ``short`` servers never receive
  the leader's AppendEntries before the crash, only its heartbeats;
* the basic algorithm of the paper: no pre-vote, no check-quorum (both are
  options of this function, off by default).

Time inside the cores is in microseconds, so a 150-151 ms range has 1,001
possible timeouts, as a real clock would. One trial is a pure function of
``(setup, seed)``: its own ``random.Random(seed)`` for latencies and the
crash moment, and the seed again for the cores' timeout draws.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Iterable

import attrs

from graft_core import (
    AppendRequest,
    Config,
    DurableState,
    Entry,
    HardState,
    Heartbeat,
    MessageReceived,
    NodeState,
    Persist,
    PersistCompleted,
    Role,
    Send,
    Tick,
    start,
    step,
)

_US = 1000  # microseconds per millisecond
_DELIVER, _TIMER, _DISK, _BOOT = range(4)
#: Servers boot this far apart, so the first election has a clear winner even
#: when every timeout is equal (150-150 ms).
_BOOT_GAP_US = 20 * _US


def _ms_range(
    _: object, attribute: attrs.Attribute[tuple[float, float]], value: tuple[float, float]
) -> None:
    if (
        not isinstance(value, tuple)
        or len(value) != 2
        or not all(isinstance(v, int | float) for v in value)
        or not 0 <= value[0] <= value[1]
    ):
        raise ValueError(
            f"{attribute.name} must be a range (low, high) in ms with 0 <= low <= high, "
            f"got {value!r}"
        )


@attrs.frozen
class FailoverSetup:
    """One line of Figure 16: the cluster, its timeouts and its network.

    Args:
        timeout_ms: the election timeout range ``(low, high)`` in ms, inclusive
            (the paper's "150-155 ms"); ``low == high`` means no randomness.
        servers: cluster size (the paper: 5).
        one_way_ms: one-way message latency, uniform in this range.
        disk_ms: how long one write to stable storage takes, uniform in range.
        short_servers: followers whose logs are behind (not electable).
        pre_vote, check_quorum: the thesis' extensions (§9.6, §6.2); off in
            the paper's experiment.
        limit_ms: give up a trial (and report ``None``) after this long.
    """

    timeout_ms: tuple[float, float] = attrs.field(default=(150.0, 300.0), validator=_ms_range)
    servers: int = 5
    one_way_ms: tuple[float, float] = attrs.field(default=(2.0, 3.0), validator=_ms_range)
    disk_ms: tuple[float, float] = attrs.field(default=(9.0, 11.0), validator=_ms_range)
    short_servers: int = 2
    pre_vote: bool = False
    check_quorum: bool = False
    limit_ms: float = 60_000.0

    def __attrs_post_init__(self) -> None:
        if self.timeout_ms[0] < 2:
            raise ValueError(f"the minimum election timeout must be >= 2 ms: {self.timeout_ms}")
        if self.servers < 3 or not 0 <= self.short_servers <= self.servers - 3:
            raise ValueError(
                f"need >= 3 servers and at least 2 electable survivors; got servers="
                f"{self.servers}, short_servers={self.short_servers}"
            )

    @property
    def heartbeat_ms(self) -> float:
        """Half the minimum election timeout, as in the paper's benchmark."""
        return self.timeout_ms[0] / 2

    @property
    def label(self) -> str:
        lo, hi = self.timeout_ms
        return f"{lo:g}-{hi:g} ms"


@attrs.frozen
class FailoverResult:
    """One trial: ``downtime_ms`` from the crash until every surviving server
    heard from the new leader (``None`` if none was elected within the
    limit), and how many election terms it took."""

    seed: int
    downtime_ms: float | None
    terms: int
    new_leader: str | None


class _Trial:
    def __init__(self, setup: FailoverSetup, seed: int) -> None:
        self.setup = setup
        self.seed = seed
        self.rng = random.Random(seed)
        self.ids = tuple(f"s{k}" for k in range(setup.servers))
        lo, hi = setup.timeout_ms
        long_log = tuple(Entry(1, b"x") for _ in range(10))
        self.short = frozenset(self.ids[setup.servers - setup.short_servers:])
        self.configs: dict[str, Config] = {}
        self.durable: dict[str, DurableState] = {}
        for k, nid in enumerate(self.ids):
            self.configs[nid] = Config(
                nid,
                self.ids,
                seed=seed * 1_000_003 + k,
                heartbeat_interval=max(1, round(setup.heartbeat_ms * _US)),
                election_timeout=round(lo * _US),
                election_timeout_max=round(hi * _US),
                pre_vote=setup.pre_vote,
                check_quorum=setup.check_quorum,
            )
            entries = long_log[:5] if nid in self.short else long_log
            self.durable[nid] = DurableState(HardState(1, None), entries)
        self.states: dict[str, NodeState] = {}
        self.queue: list[tuple[int, int, int, str, object]] = []
        self.seq = 0
        self.timer_at: dict[str, int] = {}
        self.disk_free: dict[str, int] = dict.fromkeys(self.ids, 0)
        self.disk_pending: dict[str, list[int]] = {nid: [] for nid in self.ids}
        #: Crashed, or not booted yet.
        self.dead: set[str] = set(self.ids)
        self.now = 0
        # Set once the leader is crashed.
        self.crashed: str | None = None
        self.crash_at = 0
        self.new_leader: str | None = None
        self.heard: set[str] = set()
        for k, nid in enumerate(self.ids):
            self.push(k * _BOOT_GAP_US, _BOOT, nid, None)

    def push(self, at: int, kind: int, node: str, payload: object) -> None:
        self.seq += 1
        heapq.heappush(self.queue, (at, self.seq, kind, node, payload))

    def arm(self, nid: str) -> None:
        at = self.states[nid].next_deadline()
        if self.timer_at.get(nid) != at:
            self.timer_at[nid] = at
            self.push(max(at, self.now), _TIMER, nid, at)

    def uniform_us(self, r: tuple[float, float]) -> int:
        return round(self.rng.uniform(*r) * _US)

    def run_step(self, nid: str, event: object) -> None:
        state, actions = step(self.states[nid], event)  # type: ignore[arg-type]
        self.states[nid] = state
        for a in actions:
            if isinstance(a, Send):
                self.send(a.message)
            elif isinstance(a, Persist):
                # One write at a time per disk; a write starts when the
                # previous one ends (the shell's group commit).
                done = max(self.now, self.disk_free[nid]) + self.uniform_us(self.setup.disk_ms)
                self.disk_free[nid] = done
                self.push(done, _DISK, nid, a.seq)
        self.arm(nid)

    def send(self, m: object) -> None:
        dst: str = m.dst  # type: ignore[attr-defined]
        if self.crashed is None and dst in self.short and isinstance(m, AppendRequest):
            return  # keep the short logs short until the crash
        self.push(self.now + self.uniform_us(self.setup.one_way_ms), _DELIVER, dst, m)

    def pop(self) -> None:
        """Handle the next queue entry (the queue is not empty)."""
        at, _, kind, nid, payload = heapq.heappop(self.queue)
        self.now = max(self.now, at)
        if kind == _BOOT:
            self.dead.discard(nid)
            self.states[nid] = start(self.configs[nid], self.now, self.durable[nid])
            self.arm(nid)
            return
        if nid in self.dead:
            return
        if kind == _TIMER:
            if self.timer_at.get(nid) != payload:
                return  # superseded
            del self.timer_at[nid]
            self.run_step(nid, Tick(self.now))
        elif kind == _DISK:
            self.run_step(nid, PersistCompleted(payload, now=self.now))  # type: ignore[arg-type]
        else:
            self.deliver(nid, payload)

    def deliver(self, nid: str, m: object) -> None:
        if (
            self.crashed is not None
            and isinstance(m, Heartbeat | AppendRequest)
            and m.src == self.new_leader
        ):
            self.heard.add(nid)
        self.run_step(nid, MessageReceived(m, now=self.now))  # type: ignore[arg-type]
        state = self.states[nid]
        if state.role is Role.LEADER and self.crashed is not None and self.new_leader is None:
            self.new_leader = nid

    def leader(self) -> str | None:
        leaders = [
            n for n, s in self.states.items() if s.role is Role.LEADER and n not in self.dead
        ]
        return leaders[0] if len(leaders) == 1 else None

    def run(self) -> FailoverResult:
        setup = self.setup
        limit = round(setup.limit_ms * _US)
        # Warm up: every server booted, a leader elected with its no-op
        # committed, a few heartbeats.
        settle = round(3 * setup.timeout_ms[1] * _US) + len(self.ids) * _BOOT_GAP_US
        while self.queue and self.queue[0][0] <= settle:
            self.pop()
        while self.queue and (self.leader() is None or self.leader_not_settled()):
            if self.now > limit:
                return FailoverResult(self.seed, None, 0, None)
            self.pop()
        leader = self.leader()
        assert leader is not None
        # Crash right after the next heartbeat broadcast, uniformly within
        # the heartbeat interval.
        beat_at = self.states[leader].heartbeat_deadline
        while self.queue and self.now < beat_at:
            self.pop()
        crash_at = max(self.now, beat_at) + round(
            self.rng.uniform(0.0, setup.heartbeat_ms) * _US
        )
        while self.queue and self.queue[0][0] < crash_at:
            self.pop()
        self.now = max(self.now, crash_at)
        self.dead.add(leader)
        self.crashed, self.crash_at = leader, self.now
        start_term = self.states[leader].term
        survivors = set(self.ids) - {leader}
        deadline = self.now + limit
        while self.queue and self.now <= deadline:
            self.pop()
            if self.new_leader is not None and self.heard >= survivors - {self.new_leader}:
                term = self.states[self.new_leader].term
                return FailoverResult(
                    self.seed, (self.now - self.crash_at) / _US, term - start_term, self.new_leader
                )
        terms = max(self.states[n].term for n in survivors) - start_term
        return FailoverResult(self.seed, None, terms, None)

    def leader_not_settled(self) -> bool:
        leader = self.leader()
        assert leader is not None
        s = self.states[leader]
        return s.commit_index < s.last_index


def failover_trial(setup: FailoverSetup, seed: int) -> FailoverResult:
    """Run one trial of ``setup`` with ``seed``: elect, crash the leader, time it."""
    return _Trial(setup, seed).run()


def failover_trials(
    setup: FailoverSetup,
    seeds: Iterable[int],
    progress: Callable[[int], None] | None = None,
) -> list[FailoverResult]:
    """Run one trial per seed; ``progress(k)`` is called after trial ``k``."""
    out = []
    for k, seed in enumerate(seeds):
        out.append(failover_trial(setup, seed))
        if progress is not None:
            progress(k + 1)
    return out


#: The paper's two graphs: (timeouts, trials) per line.
FIGURE_16_TOP: tuple[tuple[tuple[float, float], int], ...] = (
    ((150, 150), 100),
    ((150, 151), 1000),
    ((150, 155), 1000),
    ((150, 175), 1000),
    ((150, 200), 1000),
    ((150, 300), 1000),
)
FIGURE_16_BOTTOM: tuple[tuple[tuple[float, float], int], ...] = (
    ((12, 24), 1000),
    ((25, 50), 1000),
    ((50, 100), 1000),
    ((100, 200), 1000),
    ((150, 300), 1000),
)
