"""Meter's benchmark: the service measured against PostgreSQL's own ceiling, in one run."""
