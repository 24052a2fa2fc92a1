"""The web console: server-rendered pages over Meter's gRPC API, for operators and support.

It is a client like the CLI: every page is a view of what `AsyncMeterClient` returns, and
every refusal is the server's. Nothing here opens a database connection.
"""
