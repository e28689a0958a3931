"""The graft_trio benchmark runs end to end and prints its table (timings are not asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ROWS = (
    "append p50",
    "append p99",
    "throughput",
    "fsync p50",
    "loopback RTT p50",
)


@pytest.mark.parametrize(
    ("flags", "where"),
    [((), "in 3 processes"), (("--one-process",), "in ONE process")],
    ids=["3-processes", "one-process"],
)
def test_trio_benchmark_smoke(tmp_path: Path, flags: tuple[str, ...], where: str) -> None:
    """A quick 3-node run prints one row per measurement, with a graft/floor ratio."""
    out = subprocess.run(
        [sys.executable, "benchmarks/bench_trio.py", "--quick", "--dir", str(tmp_path), *flags],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert where in lines[0]
    assert lines[1].split()[:2] == ["metric", "graft"]
    for row in ROWS:
        assert any(line.startswith(row) for line in lines), f"no {row!r} row in:\n{out.stdout}"
    ratios = [line for line in lines if line.startswith(("append p", "throughput"))]
    assert all(line.rstrip().endswith("x") for line in ratios), out.stdout
    # The temporary data directories are removed afterwards.
    assert list(tmp_path.iterdir()) == []
