"""Pure policy math, one module each, registered by name.

Third-party policies register through the entry point group `autoscaler.policies`; see
`autoscaler.registry`.
"""

from policies.base import Policy
from policies.capacity import CapacityPolicy
from policies.forecast import ForecastPolicy
from policies.queue_trend import QueueTrendPolicy
from policies.schedule import SchedulePolicy
from policies.seasonal import SeasonalPolicy
from policies.target_value import TargetValuePolicy
from policies.threshold import ThresholdPolicy

BUILTIN_POLICIES: dict[str, type[Policy]] = {
    "threshold": ThresholdPolicy,
    "queue_trend": QueueTrendPolicy,
    "capacity": CapacityPolicy,
    "target_value": TargetValuePolicy,
    "forecast": ForecastPolicy,
    "schedule": SchedulePolicy,
    "seasonal": SeasonalPolicy,
}

__all__ = ["BUILTIN_POLICIES", "Policy"]
