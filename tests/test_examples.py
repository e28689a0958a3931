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
