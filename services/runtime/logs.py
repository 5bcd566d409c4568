"""Structured JSON logs with the request id, and the trace and span ids when tracing is on.

Log calls pass only identifiers and outcomes in `extra={"fields": {...}}`; never request
payloads, personal information or exception messages from the database (they can quote values).
"""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from typing import Any

from services.runtime.context import request_id
from services.runtime.tracing import current_ids

MAX_FRAMES = 30


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self._service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = request_id()
        if rid:
            entry["request_id"] = rid
        ids = current_ids()
        if ids is not None:
            entry["trace_id"], entry["span_id"] = ids
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info and record.exc_info[0] is not None:
            # type and frames only: messages of driver errors can quote column values
            entry["error_type"] = record.exc_info[0].__name__
            frames = traceback.extract_tb(record.exc_info[2], limit=MAX_FRAMES)
            entry["stack"] = [f"{f.filename}:{f.lineno} {f.name}" for f in frames]
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
