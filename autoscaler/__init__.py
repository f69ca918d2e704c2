"""Stalwart autoscaler: a control loop that keeps a mail cluster at the right size."""

__version__ = "0.1.0"
