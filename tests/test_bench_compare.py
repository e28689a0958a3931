"""The graft-vs-PySyncObj benchmark runs end to end and writes well-formed JSON.

Only the shape of the output is checked: no timing is asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAT = {"median", "min", "max", "repeats"}


def test_compare_benchmark_smoke(tmp_path: Path) -> None:
    """A --quick run prints the table and writes the JSON that notebooks read."""
    out_json = tmp_path / "results" / "quick.json"
    data = tmp_path / "data"
    out = subprocess.run(
        [sys.executable, "benchmarks/bench_compare.py", "--quick", "--json", str(out_json),
         "--dir", str(data)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "graft-3" in out.stdout and "pysyncobj-3" in out.stdout, out.stdout
    results = json.loads(out_json.read_text())
    assert set(results) == {"meta", "floor", "systems", "ratios"}
    meta = results["meta"]
    assert {"date", "cpus", "python", "payload_bytes", "repeats", "inflight",
            "pysyncobj"} <= set(meta)
    assert "fsync" in meta["pysyncobj"]["persistence"]
    for key in ("fsync_p50", "fsync_p99", "rtt_p50", "rtt_p99"):
        assert set(results["floor"][key]) == STAT
    assert results["floor"]["write_rate"] > 0
    assert set(results["systems"]) == {"graft-3", "pysyncobj-3"}
    for system in results["systems"].values():
        assert system["nodes"] == 3
        assert set(system["latency_p50"]) == STAT
        assert set(system["latency_p99"]) == STAT
        assert set(system["throughput"]) == {str(i) for i in meta["inflight"]}
        for stat in system["throughput"].values():
            assert set(stat) == STAT and len(stat["repeats"]) == meta["repeats"]
        assert set(system["cpu_s_per_10k_commits"]) <= {str(i) for i in meta["inflight"]}
        assert len(system["peak_rss_mib"]["per_node"]) == 3
        assert all(rss > 0 for rss in system["peak_rss_mib"]["per_node"])
    assert "latency_p50 graft/pysyncobj" in results["ratios"]["3"]
    assert "latency_p50 graft/floor" in results["ratios"]["3"]
    # The temporary data directories are removed afterwards.
    assert list(data.iterdir()) == []
