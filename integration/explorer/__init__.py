"""The API explorer: a linked store's own schema (as Magento filtered it for our token) in
Swagger UI, with *Try it* sent through our server, signed and audited like the console."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    from . import routes

    app.register_blueprint(routes.bp)
