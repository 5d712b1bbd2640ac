"""The API's OpenAPI 3.1 document, generated from the views (paths from their routes,
operations from their docstrings, shapes from the marshmallow schemas, security from the
scope each view requires), and a page rendering it with Swagger UI.

Swagger UI's files come from the ``flask-swagger-ui`` package and are served from here: no
CDN, and the page keeps the app's strict CSP (its start-up script is a file, not inline).
"""

from __future__ import annotations

import copy
from pathlib import Path

import flask_swagger_ui
from apispec import APISpec, BasePlugin
from apispec.ext.marshmallow import MarshmallowPlugin
from apispec_webframeworks.flask import FlaskPlugin
from flask import abort, current_app, jsonify, render_template, send_from_directory, url_for

from . import bp
from .schemas import ErrorSchema

SWAGGER_UI = Path(flask_swagger_ui.__file__).resolve().parent / "dist"
ASSETS = frozenset({"swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png"})

DESCRIPTION = """\
Call your merchants' Magento stores without holding their credentials. Authenticate with an API key
(`flask --app app apikeys create NAME --scope …` or the dashboard's *API keys* page) sent as
`Authorization: Bearer mic_…`; a key in the query string is refused. Every error is
`{"error": {"code", "message", "store_error"?}}`. Requests are rate limited per key (429, `Retry-After`).
"""

ERRORS = {
    "InvalidRequest": "The request is malformed (bad parameter, path or JSON body).",
    "Unauthenticated": "No key, an unknown or revoked key, or its account is disabled.",
    "Forbidden": "The key lacks the scope this operation needs.",
    "UnknownEvent": "`after` is not the id of an event (malformed parameters are 400 invalid_request too).",
    "NotFound": "No such store for this key (another account's store is not found either).",
    "RateLimited": "Too many requests with this key; see Retry-After.",
    "StoreBusy": "Too many calls in flight to this store; see Retry-After.",
    "StoreProblem": "The store could not be reached (502), was too slow (504), revoked our token (503) "
                    "or is not linked (409); store_error says what the store said or why.",
}


class _ScopePlugin(BasePlugin):
    """Security and the auth errors of each operation, from the scope its view requires."""

    def operation_helper(self, path=None, operations=None, view=None, **kwargs):
        scope = getattr(view, "required_scope", None)
        if not scope or not operations:
            return
        for method in list(operations):
            # A docstring may alias one operation for several methods (YAML &anchor): copy first.
            operation = operations[method] = copy.deepcopy(operations[method])
            operation["operationId"] = f"{view.__name__}_{method}" if len(operations) > 1 else view.__name__
            operation["security"] = [{"bearerAuth": []}]
            operation["description"] = (operation.get("description", "").rstrip() + f"\n\nScope: `{scope}`.").strip()
            responses = operation.setdefault("responses", {})
            responses.setdefault(401, "Unauthenticated")
            responses.setdefault(403, "Forbidden")
            responses.setdefault(429, "RateLimited")


def build_spec() -> dict:
    spec = APISpec(title="Magento Integration Companion — service API", version="1", openapi_version="3.1.0",
                   info={"description": DESCRIPTION},
                   plugins=[FlaskPlugin(), _ScopePlugin(), MarshmallowPlugin()])
    spec.components.security_scheme("bearerAuth", {"type": "http", "scheme": "bearer",
                                                   "description": "An API key: mic_…"})
    spec.components.schema("Error", schema=ErrorSchema)
    for name, description in ERRORS.items():
        spec.components.response(name, {"description": description,
                                         "content": {"application/json": {"schema": "Error"}}})
    app = current_app
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        view = app.view_functions[rule.endpoint]
        if rule.endpoint.startswith("api.") and "\n    ---" in (view.__doc__ or ""):
            spec.path(view=view, app=app)
    return spec.to_dict()


@bp.get("/openapi.json")
def openapi():
    spec = current_app.extensions.get("api_spec")
    if spec is None:
        spec = current_app.extensions["api_spec"] = build_spec()
    return jsonify(spec)


@bp.get("/docs")
def docs():
    return render_template("api/docs.html", spec_url=url_for("api.openapi"))


@bp.get("/docs/assets/<name>")
def docs_asset(name: str):
    if name not in ASSETS:
        abort(404)
    return send_from_directory(SWAGGER_UI, name, max_age=86400)
