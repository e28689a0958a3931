"""The Figure 16 harness (graft_sim._failover): leader failover trials in virtual time.

The notebook ``03_paper_figure_16`` plots these; here are the properties the
numbers rest on (Raft §5.2, §5.4.1, and the paper's §9.3 set-up).
"""

from __future__ import annotations

import statistics

import pytest

from graft_sim import (
    FIGURE_16_BOTTOM,
    FIGURE_16_TOP,
    FailoverSetup,
    failover_trial,
    failover_trials,
)


@pytest.mark.parametrize("timeouts", [(150, 155), (12, 24), (150, 300)])
def test_trials_replay_and_respect_the_timing_floor(timeouts: tuple[int, int]) -> None:
    setup = FailoverSetup(timeout_ms=timeouts)
    results = failover_trials(setup, range(25))
    assert [failover_trial(setup, r.seed) for r in results] == results  # pure function of the seed
    for r in results:
        assert r.downtime_ms is not None and r.new_leader is not None
        # The crash comes at most one heartbeat (half the minimum timeout) after
        # the last heartbeat, and no follower times out before the minimum
        # timeout has passed since it heard that heartbeat (§5.2).
        assert r.downtime_ms >= timeouts[0] - setup.heartbeat_ms
        assert r.terms >= 1
        # §5.4.1: only a server with the longest log can win; the two short ones
        # ("s3", "s4") never do, and the crashed leader is gone.
        assert r.new_leader in ("s0", "s1", "s2")


def test_every_survivor_may_win_when_logs_are_equal() -> None:
    results = failover_trials(FailoverSetup(timeout_ms=(150, 300), short_servers=0), range(60))
    winners = {r.new_leader for r in results}
    assert {"s3", "s4"} & winners


def test_randomness_avoids_split_votes() -> None:
    """The paper's point: without randomized timeouts elections take many rounds."""
    flat = failover_trials(FailoverSetup(timeout_ms=(150, 150)), range(20))
    spread = failover_trials(FailoverSetup(timeout_ms=(150, 300)), range(20))
    assert statistics.mean(r.terms for r in flat) > 2 * statistics.mean(r.terms for r in spread)


def test_pre_vote_keeps_ineligible_servers_from_moving_terms() -> None:
    """Thesis §9.6: with pre-vote, the short-log servers cannot start real elections."""
    plain = failover_trials(FailoverSetup(timeout_ms=(150, 155)), range(30))
    pre = failover_trials(FailoverSetup(timeout_ms=(150, 155), pre_vote=True), range(30))
    assert statistics.mean(r.terms for r in pre) < statistics.mean(r.terms for r in plain)


def test_a_trial_that_cannot_finish_reports_none() -> None:
    r = failover_trial(FailoverSetup(timeout_ms=(150, 150), limit_ms=200), 0)
    assert r.downtime_ms is None and r.new_leader is None


def test_figure_16_lines_are_the_papers() -> None:
    assert [t for t, _ in FIGURE_16_TOP] == [
        (150, 150), (150, 151), (150, 155), (150, 175), (150, 200), (150, 300)
    ]
    assert [t for t, _ in FIGURE_16_BOTTOM] == [
        (12, 24), (25, 50), (50, 100), (100, 200), (150, 300)
    ]
    assert dict(FIGURE_16_TOP)[(150, 150)] == 100


@pytest.mark.parametrize(
    "kwargs",
    [
        {"timeout_ms": (300, 150)},
        {"timeout_ms": (1, 2)},
        {"one_way_ms": (-1, 2)},
        {"disk_ms": (5,)},
        {"servers": 2},
        {"short_servers": 3},
    ],
)
def test_bad_setups_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        FailoverSetup(**kwargs)  # type: ignore[arg-type]
