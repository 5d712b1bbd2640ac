"""Magento Integration Companion: link Magento 2 stores through their Integrations screen.

``integration.magento`` (the protocol library) and ``integration.sandbox`` import without
the web app; ``create_app`` loads Flask and the rest only when called.
"""

from __future__ import annotations


def create_app(test_config: dict | None = None):
    from .factory import create_app as factory

    return factory(test_config)
