"""The daemon's log: one JSON object per line on stderr (journald and `kubectl logs` keep it
as is); decision records go to their own logger, already JSON, and pass through unchanged."""

from __future__ import annotations

import json
import logging
from typing import Any

decision_log = logging.getLogger("autoscaler.decision")


class JsonFormatter(logging.Formatter):
    """One JSON object per line; decision lines are already JSON and are passed through."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.name == decision_log.name and message.startswith("{"):
            return message
        line: dict[str, Any] = {"time": round(record.created, 3), "level": record.levelname,
                                "logger": record.name, "message": message}
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line)


def setup_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # APScheduler's "Running job"/"executed successfully" lines would double every tick's
    # log; a tick that overruns the interval still shows (a WARNING, and the tick metrics).
    logging.getLogger("apscheduler").setLevel(max(logging.WARNING, root.level))
