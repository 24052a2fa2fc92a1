"""Meter: credit metering for AI operations on PostgreSQL, over gRPC."""

__version__ = "0.1.0"
