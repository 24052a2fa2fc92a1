"""tests/api/test_ledger.py against the Citus cluster (the session's `database_url` is its)."""

import pytest

from tests.api.test_ledger import *  # noqa: F403

pytestmark = pytest.mark.citus
