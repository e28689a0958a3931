"""graft_trio: graft_core over real TCP with durable storage, driven by trio.

    node = Node("a", ("127.0.0.1", 7001), {"b": ("127.0.0.1", 7002), ...}, "data/a")
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        result = await node.append(b"hello")       # from any node
        for entry in node.committed(1): ...        # pull
        async for entry in node.subscribe(1): ...  # push

``graft_trio.kv`` is the replicated key/value store of the original proposal
(``python -m graft_trio.kv serve|put|get``). ``MemoryNetwork`` runs a cluster
in memory, for tests on trio's MockClock.
"""

from graft_trio._network import MemoryNetwork, Network, TcpNetwork, TlsNetwork
from graft_trio._node import (
    AppendResult,
    CommittedEntry,
    CommitTimeout,
    Compacted,
    MembershipError,
    Node,
    NodeError,
    NoLeader,
    NotLeader,
    NotStarted,
    Options,
    PayloadTooLarge,
    PeerStatus,
    Rejected,
    SnapshotRestored,
    StartupError,
    Status,
    TransferFailed,
)
from graft_trio._storage import StorageCorruption, StorageError, StorageFailure, StorageMismatch
from graft_trio._tls import (
    IdentityMismatch,
    TlsConfig,
    TlsConfigError,
    TlsError,
    TlsHandshakeFailed,
)

__all__ = [
    "AppendResult",
    "MemoryNetwork",
    "Network",
    "TcpNetwork",
    "TlsNetwork",
    "TlsConfig",
    "TlsConfigError",
    "TlsError",
    "TlsHandshakeFailed",
    "IdentityMismatch",
    "CommitTimeout",
    "CommittedEntry",
    "Compacted",
    "MembershipError",
    "NotLeader",
    "SnapshotRestored",
    "TransferFailed",
    "Node",
    "NodeError",
    "NoLeader",
    "NotStarted",
    "Options",
    "PayloadTooLarge",
    "PeerStatus",
    "Rejected",
    "StartupError",
    "Status",
    "StorageCorruption",
    "StorageError",
    "StorageFailure",
    "StorageMismatch",
]
