import pytest

# The state machine's checks are plain asserts: show their operands when they fail.
pytest.register_assert_rewrite("tests.promises.machine")
