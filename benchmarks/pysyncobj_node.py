"""One PySyncObj node in its own process, driven by ``bench_compare.py`` over stdin/stdout.

Run (by ``bench_compare.py``, not by hand):
``python benchmarks/pysyncobj_node.py --self 127.0.0.1:P0 --other 127.0.0.1:P1 ...``.

The replicated state machine is a counter of commands and bytes (``add``, a
``@replicated`` method), so the state stays the same size however many
commands are applied. PySyncObj runs with its default ``SyncObjConf()``: no
``journalFile`` and no ``fullDumpFile``, so nothing -- not the log, not the
term, not the vote -- reaches the disk, let alone with fsync. Commands follow
its documentation: ``add(payload, sync=True)`` for one write at a time, and
``add(payload, callback=...)`` to keep many in flight (the callback runs when
the command is applied, i.e. committed).

The protocol is the one ``bench_compare.py`` speaks with graft's nodes: one
JSON object a line on stdin, one JSON reply a line on stdout:

* ``{"cmd": "status"}`` -> ``{"leader": bool, "ready": bool, "term": int}``;
* ``{"cmd": "seq", "count": N}`` -> ``{"latencies": [s, ...], "errors": {...}}``;
* ``{"cmd": "conc", "inflight": K, "seconds": S}`` ->
  ``{"in_window": n, "committed": m, "latencies": [...], "errors": {...}}``.

The process exits when stdin closes or after ``--max-life`` seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from pysyncobj import (  # type: ignore[import-untyped]
    FAIL_REASON,
    SyncObj,
    SyncObjConf,
    SyncObjException,
    replicated,
)
from pysyncobj.syncobj import _RAFT_STATE  # type: ignore[import-untyped]

SYNC_TIMEOUT = 5.0
DRAIN_TIMEOUT = 15.0
FAIL_NAMES = {v: k for k, v in vars(FAIL_REASON).items() if isinstance(v, int)}


class Counter(SyncObj):  # type: ignore[misc]
    def __init__(self, self_addr: str, others: list[str]) -> None:
        super().__init__(self_addr, others, conf=SyncObjConf())  # the defaults
        self.commands = 0
        self.bytes = 0

    @replicated  # type: ignore[untyped-decorator]
    def add(self, payload: bytes) -> int:
        self.commands += 1
        self.bytes += len(payload)
        return self.commands


def status(obj: Counter, nodes: int) -> dict[str, Any]:
    s = obj.getStatus()
    leader = s["state"] == _RAFT_STATE.LEADER
    connected = sum(1 for k, v in s.items() if k.startswith("partner_node_status_") and v == 2)
    return {"leader": leader, "ready": leader and connected == nodes - 1,
            "term": s["raft_term"]}


def sequential(obj: Counter, count: int) -> dict[str, Any]:
    latencies: list[float] = []
    errors: dict[str, int] = {}
    for k in range(count):
        t0 = time.perf_counter()
        try:
            obj.add(b"%016d" % k, sync=True, timeout=SYNC_TIMEOUT)
        except SyncObjException as exc:
            name = f"SyncObjException({exc.errorCode})"
            errors[name] = errors.get(name, 0) + 1
            continue
        latencies.append(time.perf_counter() - t0)
    return {"latencies": latencies, "errors": errors}


def concurrent(obj: Counter, inflight: int, seconds: float) -> dict[str, Any]:
    """``inflight`` commands outstanding for ``seconds``: each callback issues the next one."""
    lock = threading.Lock()
    latencies: list[float] = []
    errors: dict[str, int] = {}
    counts = {"in_window": 0, "outstanding": 0}
    drained = threading.Event()
    start = time.perf_counter()
    end = start + seconds

    def issue(k: int, n: int) -> None:
        t0 = time.perf_counter()

        def done(result: object, error: int) -> None:  # on PySyncObj's tick thread
            t1 = time.perf_counter()
            with lock:
                if error == FAIL_REASON.SUCCESS:
                    latencies.append(t1 - t0)
                    if t1 <= end:
                        counts["in_window"] += 1
                else:
                    name = FAIL_NAMES.get(error, str(error))
                    errors[name] = errors.get(name, 0) + 1
                counts["outstanding"] -= 1
                again = t1 < end
                if not again and counts["outstanding"] == 0:
                    drained.set()
            if again:
                issue(k, n + 1)

        with lock:
            counts["outstanding"] += 1
        obj.add(b"%08d%08d" % (k, n), callback=done)

    for k in range(inflight):
        issue(k, 0)
    drained.wait(seconds + DRAIN_TIMEOUT)
    with lock:
        return {"in_window": counts["in_window"], "committed": len(latencies),
                "latencies": list(latencies), "errors": dict(errors),
                "left_outstanding": counts["outstanding"]}


def serve(obj: Counter, nodes: int) -> None:
    commands: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
        "status": lambda c: status(obj, nodes),
        "seq": lambda c: sequential(obj, int(c["count"])),
        "conc": lambda c: concurrent(obj, int(c["inflight"]), float(c["seconds"])),
    }
    for line in sys.stdin:
        command = json.loads(line)
        reply = commands[command["cmd"]](command)
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--self", dest="self_addr", required=True)
    parser.add_argument("--other", action="append", default=[])
    parser.add_argument("--max-life", type=float, default=600.0)
    args = parser.parse_args(argv)
    killer = threading.Timer(args.max_life, lambda: os._exit(3))
    killer.daemon = True
    killer.start()
    obj = Counter(args.self_addr, args.other)
    try:
        serve(obj, 1 + len(args.other))
    finally:
        obj.destroy()
    os._exit(0)  # do not wait for PySyncObj's threads


if __name__ == "__main__":
    main()
