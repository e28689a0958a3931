"""The errors graft_core raises at the caller.

Blame is split at the boundary, as h11 does it: a *caller* mistake (an invalid
config, a proposal that is not bytes, time running backwards) raises one of the
exceptions below at the call, while bad input from a *peer* never raises: it is
dropped and reported as a :class:`graft_core.MessageDropped` action, because a
remote node must never be able to crash this one.
"""

from __future__ import annotations


class GraftError(Exception):
    """Base class of every error graft raises."""


class ConfigError(GraftError, ValueError):
    """The configuration (or the durable state handed back) is invalid."""


class ProposalError(GraftError, ValueError):
    """A proposal is not ``bytes`` or is larger than ``Config.max_proposal_bytes``."""


class EventError(GraftError, ValueError):
    """An event the caller built is invalid in the current state.

    Examples: time moving backwards, acknowledging a persist that was never
    requested, an object that is not a graft_core event.
    """
