"""structlog, configured once: JSON lines (or a console renderer) on stderr.

Every call logs one line, so the JSON line is rendered by orjson straight to bytes.
"""

from __future__ import annotations

import logging
import sys

import orjson
import structlog


def configure(level: str = "info", fmt: str = "json") -> None:
    console = fmt == "console"
    renderer: structlog.types.Processor = (
        structlog.dev.ConsoleRenderer()
        if console
        else structlog.processors.JSONRenderer(serializer=orjson.dumps)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=(
            structlog.WriteLoggerFactory(file=sys.stderr)
            if console
            else structlog.BytesLoggerFactory(file=sys.stderr.buffer)
        ),
        cache_logger_on_first_use=True,
    )
