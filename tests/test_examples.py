"""`make demo` and `make bench` keep working (their scripts run; numbers are not asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_demo_elects_commits_survives_partition_and_restart() -> None:
    """The demo's own end-to-end check passes: all nodes applied the same entries."""
    out = run("examples/core_demo.py")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "became leader" in out.stdout
    assert "stepped down" in out.stdout
    assert out.stdout.rstrip().endswith("OK")


def test_trio_demo_survives_a_killed_leader() -> None:
    """`make demo`: 3 processes, SIGKILL the leader, every acknowledged write everywhere."""
    out = run("examples/trio_demo.py")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "new leader" in out.stdout and "caught up" in out.stdout
    assert out.stdout.count("20/20 present") == 3
    assert out.stdout.rstrip().endswith("OK")


def test_core_benchmark_smoke() -> None:
    """The benchmark runs and prints one row per case with a cost ratio."""
    out = run("benchmarks/bench_core.py", "--quick")
    assert out.returncode == 0, out.stderr
    rows = [ln for ln in out.stdout.splitlines() if ln.rstrip().endswith("x")]
    assert [r.split()[0] for r in rows] == ["heartbeat", "AppendEntries(1)", "AppendEntries(64)"]


def test_simulator_benchmark_smoke() -> None:
    """The simulator benchmark runs and prints a baseline and one row per case."""
    out = run("benchmarks/bench_sim.py", "--quick")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("baseline: bare core")
    rows = [ln for ln in out.stdout.splitlines() if ln.rstrip().endswith("x")]
    assert len(rows) == 3


def test_asyncio_embedding_replicates_and_recovers_without_trio(tmp_path: Path) -> None:
    """graft_core runs in plain asyncio: the example elects, replicates through
    every node, restarts a killed node from its write-ahead file -- and never
    imports trio."""
    code = (
        "import asyncio, runpy, sys, pathlib\n"
        "m = runpy.run_path('examples/asyncio_embed.py')\n"
        f"applied = asyncio.run(m['demo'](pathlib.Path({str(tmp_path)!r})))\n"
        "print(sorted(applied.items()))\n"
        "print('trio' in sys.modules, 'graft_trio' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stdout + out.stderr
    applied_line, modules_line = out.stdout.strip().splitlines()
    applied = dict(eval(applied_line))
    assert sorted(applied) == ["a", "b", "c"]
    first = applied["a"]
    assert first[:5] == [f"x={k}".encode() for k in range(5)]
    assert len(first) == 6 and first[5].startswith(b"while ") and first[5].endswith(b" was down")
    assert applied["b"] == first and applied["c"] == first
    assert modules_line == "False False"
    # Every node's file replays to its durable log, entries in order.
    for node in "abc":
        assert (tmp_path / f"{node}.jsonl").stat().st_size > 0


def test_asyncio_embedding_ignores_a_torn_last_write(tmp_path: Path) -> None:
    """A crash in the middle of a write leaves half a line: recovery stops before it."""
    import asyncio
    import runpy

    from graft_core import Config, Entry, EntryKind, HardState, Persist

    m = runpy.run_path(str(ROOT / "examples" / "asyncio_embed.py"))

    async def scenario() -> tuple[object, object]:
        config = Config("a", ("a", "b", "c"))
        node = m["AsyncioNode"](config, tmp_path, {})
        node.write(Persist(1, HardState(3, "b"), None, 1, (Entry(2, b"one"), Entry(3, b"two"))))
        node.write(Persist(2, None, 2, 2, (Entry(3, b"TWO"),)))
        with open(tmp_path / "a.jsonl", "a") as f:
            f.write('{"hard": [4, "c"], "trunc')  # torn: never acknowledged
        again = m["AsyncioNode"](config, tmp_path, {})
        return again.state.hard, [(e.term, e.data, e.kind) for e in again.state.log.slice(1, 3)]

    hard, entries = asyncio.run(scenario())
    assert hard == HardState(3, "b")
    assert entries == [(2, b"one", EntryKind.NORMAL), (3, b"TWO", EntryKind.NORMAL)]
