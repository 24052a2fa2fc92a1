"""The client's calls, written once: _async/ is the source; generated/meter/client/_sync/ is
written from it (make client) and installed as meter.client._sync."""
