"""tests/api/test_policies.py against the Citus cluster (the session's `database_url` is its)."""

import pytest

from tests.api.test_policies import *  # noqa: F403

pytestmark = pytest.mark.citus
