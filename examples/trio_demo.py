"""`make demo`: a real 3-node graft key/value cluster, a killed leader, nothing lost.

Starts three `python -m graft_trio.kv serve` processes on 127.0.0.1 (free
ports, temporary data directories), writes keys through a follower, SIGKILLs
the leader's process, shows the new leader, writes more, restarts the old
leader and shows it catch up, then checks that every acknowledged write is on
every node. Cleans up its processes and directories whatever happens.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from graft_trio.testing import free_ports

IDS = ("a", "b", "c")


class Cluster:
    def __init__(self, root: Path) -> None:
        self.root = root
        ports = free_ports(2 * len(IDS))
        self.peer = {n: ports[i] for i, n in enumerate(IDS)}
        self.client = {n: ports[len(IDS) + i] for i, n in enumerate(IDS)}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, n: str) -> None:
        cmd = [
            sys.executable, "-m", "graft_trio.kv", "serve", "--id", n,
            "--listen", f"127.0.0.1:{self.peer[n]}", "--client", f"127.0.0.1:{self.client[n]}",
            "--data", str(self.root / n),
        ]
        for m in IDS:
            if m != n:
                cmd += ["--peer", f"{m}=127.0.0.1:{self.peer[m]}"]
        log = open(self.root / f"{n}.log", "ab")  # noqa: SIM115 - kept open for the process
        self.procs[n] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)

    def kill(self, n: str) -> None:
        p = self.procs.pop(n)
        p.send_signal(signal.SIGKILL)
        p.wait()

    def stop_all(self) -> None:
        for p in self.procs.values():
            p.send_signal(signal.SIGKILL)
        for p in self.procs.values():
            p.wait()
        self.procs.clear()

    def ask(self, n: str, req: dict[str, Any], timeout: float = 10) -> Any:
        with socket.create_connection(("127.0.0.1", self.client[n]), timeout=timeout) as s:
            s.sendall(json.dumps(req).encode() + b"\n")
            buf = b""
            while b"\n" not in buf:
                data = s.recv(65536)
                if not data:
                    raise ConnectionError("closed")
                buf += data
        return json.loads(buf.split(b"\n", 1)[0])

    def status(self, n: str) -> Any:
        try:
            return self.ask(n, {"op": "status"}, timeout=1)
        except OSError:
            return None

    def wait_leader(self, among: tuple[str, ...], timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            statuses = [self.status(n) for n in among]
            leaders = {s["leader"] for s in statuses if s}
            if len(leaders) == 1 and None not in leaders and all(statuses):
                leader = leaders.pop()
                if leader in among:
                    return str(leader)
            time.sleep(0.1)
        raise RuntimeError(f"no leader among {among} within {timeout}s")


def main() -> int:
    root = Path(tempfile.mkdtemp(prefix="graft-demo-"))
    cluster = Cluster(root)
    try:
        print(f"== Starting 3 graft K/V processes on 127.0.0.1 (data in {root})")
        for n in IDS:
            cluster.start(n)
        leader = cluster.wait_leader(IDS)
        print(f"-> leader is {leader} (term {cluster.status(leader)['term']})")
        follower = next(n for n in IDS if n != leader)
        acknowledged: dict[str, str] = {}
        print(f"\n== Writing 10 keys through follower {follower} (it forwards to the leader)")
        for k in range(10):
            answer = cluster.ask(follower, {"op": "put", "key": f"k{k}", "value": f"v{k}"})
            assert answer["ok"], answer
            acknowledged[f"k{k}"] = f"v{k}"
        print(f"   k0..k9 committed; get k3 via {leader}: "
              f"{cluster.ask(leader, {'op': 'get', 'key': 'k3'})['value']!r}")

        print(f"\n== SIGKILL the leader's process ({leader})")
        cluster.kill(leader)
        rest = tuple(n for n in IDS if n != leader)
        t0 = time.monotonic()
        new_leader = cluster.wait_leader(rest)
        print(f"-> new leader {new_leader} (term {cluster.status(new_leader)['term']}) "
              f"after {time.monotonic() - t0:.2f}s")
        for k in range(10, 20):
            answer = cluster.ask(rest[0], {"op": "put", "key": f"k{k}", "value": f"v{k}"})
            assert answer["ok"], answer
            acknowledged[f"k{k}"] = f"v{k}"
        print("   k10..k19 committed by the two survivors")

        print(f"\n== Restarting {leader} from its data directory")
        cluster.start(leader)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            up = cluster.status(leader)
            dump = cluster.ask(leader, {"op": "dump"}, timeout=2) if up else None
            if dump and all(dump["data"].get(k) == v for k, v in acknowledged.items()):
                break
            time.sleep(0.1)
        print(f"-> {leader} caught up: applied index {cluster.status(leader)['applied']}, "
              f"now a {cluster.status(leader)['role']}")

        print("\n== Checking every acknowledged write on every node")
        ok = True
        for n in IDS:
            data = cluster.ask(n, {"op": "dump"})["data"]
            missing = [k for k, v in acknowledged.items() if data.get(k) != v]
            print(f"   {n}: {len(acknowledged) - len(missing)}/{len(acknowledged)} present"
                  + (f", MISSING {missing}" if missing else ""))
            ok = ok and not missing
        print("OK" if ok else "LOST WRITES")
        return 0 if ok else 1
    finally:
        cluster.stop_all()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
