"""Entry point: ``flask --app app run`` and ``gunicorn app:app``."""

import sys

from integration import create_app
from integration.config import ConfigError

try:
    app = create_app()
except ConfigError as exc:
    # The operator's to fix: one line, no traceback. Exit status 4 is gunicorn's "the app failed
    # to load", so it stops instead of restarting workers that cannot start either.
    print(f"Configuration error: {exc}", file=sys.stderr)
    raise SystemExit(4) from None
