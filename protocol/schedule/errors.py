"""Why a scheduling input or a link report was refused."""

from __future__ import annotations

from protocol.errors import ValidationError


class ScheduleError(ValidationError):
    """A scheduling input (devices, links, workload, shape, budget) is invalid."""


class Infeasible(ScheduleError):
    """No assignment fits: some stage needs more memory than the devices offer."""


class LinkReportError(ValidationError):
    """A link report breaks a rule (expired, from the future, duplicate peer, self-link)."""
