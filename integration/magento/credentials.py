"""What a Magento OAuth credential looks like: the one rule the callback, the manual link (web
and CLI) and the identity pop-up all check.

Magento generates consumer keys and secrets, tokens, token secrets and verifiers as exactly
32 letters or digits (``Magento\\Framework\\Oauth\\Helper\\Oauth``), and its columns, like ours,
hold exactly that.
"""

from __future__ import annotations

import re

from .errors import MagentoError

_SHAPE = re.compile(r"[A-Za-z0-9]{32}")
RULE = "32 letters or digits"


class MalformedCredential(MagentoError):
    """A credential that Magento cannot have issued; nothing was stored or sent."""

    hint = "Copy it again from the integration's page in Magento's admin (System › Extensions › Integrations)."


def is_credential(value: object) -> bool:
    # fullmatch, not a pattern ending in `$`: `$` also matches before a trailing newline.
    return isinstance(value, str) and _SHAPE.fullmatch(value) is not None
