"""tests/events/test_webhooks.py against the Citus cluster (the session's `database_url` is its)."""

import pytest

from tests.events.test_webhooks import *  # noqa: F403

pytestmark = pytest.mark.citus
