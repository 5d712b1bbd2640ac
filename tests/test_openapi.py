"""The OpenAPI document is valid 3.1, generated from the code, and covers every API route."""

from __future__ import annotations

from openapi_spec_validator import validate
from openapi_spec_validator.versions import consts as versions
from openapi_spec_validator.versions.shortcuts import get_spec_version


def test_the_document_is_valid_openapi_3_1(client):
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200 and "Set-Cookie" not in response.headers
    spec = response.json
    assert get_spec_version(spec) == versions.OPENAPIV31
    validate(spec)


def test_every_api_route_is_documented_with_its_scope(app, client):
    spec = client.get("/api/v1/openapi.json").json
    undocumented = {"api.openapi", "api.docs", "api.docs_asset"}
    for rule in app.url_map.iter_rules():
        if not rule.endpoint.startswith("api.") or rule.endpoint in undocumented:
            continue
        path = rule.rule.replace("<int:", "{").replace("<path:", "{").replace("<", "{").replace(">", "}")
        operations = spec["paths"][path]
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            operation = operations[method.lower()]
            scope = app.view_functions[rule.endpoint].required_scope
            assert operation["security"] == [{"bearerAuth": []}] and f"Scope: `{scope}`" in operation["description"]
            assert {"401", "403", "429"} <= set(operation["responses"]), (path, method)
    error = spec["components"]["schemas"]["ErrorBody"]
    assert set(error["properties"]) == {"code", "message", "store_error"}


def test_the_docs_page_uses_only_local_assets_under_the_strict_csp(client):
    page = client.get("/api/v1/docs")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert "<script>" not in html and "http" not in html.replace('http-equiv', '')
    for asset in ("swagger-ui.css", "swagger-ui-bundle.js"):
        served = client.get(f"/api/v1/docs/assets/{asset}")
        assert served.status_code == 200 and len(served.data) > 10000
    assert client.get("/api/v1/docs/assets/../../app.py").status_code == 404
    assert client.get("/api/v1/docs/assets/index.html").status_code == 404
