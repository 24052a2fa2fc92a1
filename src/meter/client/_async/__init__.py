"""The client's calls, written once: _async/ is the source, and _sync/ is generated from it."""
