"""Who is calling: principals, their roles and tokens (no transport, no SQL here)."""
