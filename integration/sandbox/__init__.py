"""A sandbox Magento store for tests and for clicking through an activation locally."""

from .app import create_sandbox
from .state import SandboxLimit, SandboxState, StateFileError

__all__ = ["create_sandbox", "SandboxLimit", "SandboxState", "StateFileError"]
