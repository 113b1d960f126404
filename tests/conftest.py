"""Shared pytest configuration. Keep plugins in their own modules; list them here."""

import pytest

# Tests marked @pytest.mark.uml run inside a User-Mode-Linux guest (docs/testing-in-uml.md).
pytest_plugins = ["uml_plugin", "host_netns"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "uml: run inside a User-Mode-Linux guest with a real IPVS kernel, as root "
        "(one guest per test module; see docs/testing-in-uml.md)",
    )
