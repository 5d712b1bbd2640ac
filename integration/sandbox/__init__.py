"""A sandbox Magento store for tests and for clicking through an activation locally."""

from .app import create_sandbox
from .state import SandboxState

__all__ = ["create_sandbox", "SandboxState"]
