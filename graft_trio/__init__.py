"""graft_trio: graft_core over real TCP with durable storage (issue: graft_trio).

The production shell is not built yet; this package exists so the repository
has its final shape. Its public surface is empty until then.
"""

__all__: list[str] = []
