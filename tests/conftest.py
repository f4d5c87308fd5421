import pytest


def pytest_configure(config):
    try:
        import dataplane._dataplane  # noqa: F401
    except ImportError as e:
        raise pytest.UsageError(
            f"the nvgw extension is not built ({e}); run scripts/bootstrap.sh") from None
