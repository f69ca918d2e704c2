"""Replay: the engine's decisions on a simulated clock, never on a real backend.

`plant` models the mail instances (start-up delay, queue, Prometheus-like scrapes);
`simulate` drives it with a demand trace; `backtest` replays Prometheus history. Both run
every evaluation through `autoscaler.evaluate`, as the live loop does. The plant is not an
actuator: nothing here writes anywhere.
"""
