"""tests/api/test_idempotency.py against the Citus cluster (the session's `database_url` is its)."""

import pytest

from tests.api.test_idempotency import *  # noqa: F403

pytestmark = pytest.mark.citus
