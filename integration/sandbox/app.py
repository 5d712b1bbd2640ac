"""The sandbox store: a small WSGI app that behaves like a Magento 2.4 store towards an integration.

* ``/admin/integrations``: Magento's Integrations grid, cut down: create an integration,
  *Activate* / *Reauthorize* (POSTs the callback, opens the identity link in a pop-up), *Delete*.
* ``/oauth/token/request`` and ``/oauth/token/access`` with Magento's rules and errors.
* ``/rest/[store]/V1/...``: a few REST resources, signed with OAuth (or bearer, if enabled).

Imports nothing from the companion app.
"""

from __future__ import annotations

import json
import time
from urllib.parse import parse_qsl

import orjson
import requests
from flask import Flask, Response, abort, jsonify, redirect, render_template_string, request, url_for

from . import changes, oauth_provider, schema, search
from .catalogue import product as make_product
from .state import SandboxLimit, SandboxState

POST_FAILED = "The attempt to post data to consumer failed due to an unexpected error. Please try again later."


def create_sandbox(state: SandboxState | None = None, *, base_url: str | None = None) -> Flask:
    app = Flask(__name__)
    app.config["SANDBOX"] = state = state or SandboxState()
    app.config["MAX_CONTENT_LENGTH"] = 1024 * 1024

    def store_base_url() -> str:
        return base_url or request.host_url

    # --- admin ------------------------------------------------------------------------

    @app.get("/")
    def home():
        return redirect(url_for("integrations"))

    @app.get("/admin/integrations")
    def integrations():
        return render_template_string(ADMIN_PAGE, integrations=list(state.integrations.values()),
                                      profile=state.profile, resources=schema.RESOURCES,
                                      input_limit=state.input_limit)

    @app.post("/admin/integrations")
    def create_integration():
        name = request.form.get("name", "").strip() or "Integration"
        # Magento's *API* tab: Resource Access "All", or "Custom" with the ticked resources.
        resources = None
        if request.form.get("resource_access") == "custom":
            resources = tuple(r for r in request.form.getlist("resources") if r in schema.RESOURCES)
        try:
            state.add_integration(name, request.form.get("callback_url", "").strip(),
                                  request.form.get("identity_url", "").strip(), resources=resources)
        except SandboxLimit as exc:
            return Response(f"Not saved: {exc}.", 400, content_type="text/plain; charset=utf-8")
        return redirect(url_for("integrations"))

    @app.post("/admin/integrations/<int:integration_id>/delete")
    def delete_integration(integration_id: int):
        if not state.remove_integration(integration_id):
            abort(404)
        return redirect(url_for("integrations"))

    @app.get("/admin/integrations/<int:integration_id>/tokens_exchange")
    def tokens_exchange(integration_id: int):
        integration = state.integrations.get(integration_id) or abort(404)
        with state.lock:
            if request.args.get("reauthorize") == "1":
                integration.token = None
                integration.status = "Inactive"
            integration.consumer_updated_at = time.time()
            verifier = oauth_provider.new_verifier(integration).verifier
        if not integration.is_token_exchange:
            return jsonify(error="This sandbox only does token-exchange integrations.")
        try:
            requests.post(integration.callback_url, timeout=5, allow_redirects=False, data={
                "oauth_consumer_key": integration.consumer_key,
                "oauth_consumer_secret": integration.consumer_secret,
                "store_base_url": store_base_url(),
                "oauth_verifier": verifier,
            })
        except requests.RequestException:
            return jsonify(error=POST_FAILED)
        return jsonify(identity_link_url=integration.identity_url, oauth_consumer_key=integration.consumer_key,
                       success_call_back=url_for("login_success", _external=True))

    @app.after_request
    def keep_state(response: Response) -> Response:
        if request.endpoint in ("tokens_exchange", "token"):  # what changes integrations and their tokens
            state.save()
        return response

    @app.get("/admin/integration/loginSuccessCallback")
    def login_success():
        return '<html><body><script>setTimeout("self.close()",1000)</script>Done.</body></html>'

    # --- OAuth ------------------------------------------------------------------------

    @app.route("/oauth/token/<step>", methods=["GET", "POST"])
    @app.route("/index.php/oauth/token/<step>", methods=["GET", "POST"])
    def token(step: str):
        handler = {"request": oauth_provider.request_token, "access": oauth_provider.access_token}.get(step)
        if handler is None:
            abort(404)
        failure = state.take_failure(f"/oauth/token/{step}")
        if failure:
            return Response("<html>Service Unavailable</html>", failure)
        try:
            answer = handler(state, request.environ, request.get_data(as_text=True))
        except oauth_provider.OAuthFailure as exc:
            return Response(oauth_provider.problem_body(exc.message), exc.status, content_type="text/html; charset=UTF-8")
        except Exception as exc:  # noqa: BLE001 - Magento's "internal_error" branch
            return Response(oauth_provider.problem_body(f"internal_error&message={exc}"), 500)
        return Response("&".join(f"{k}={v}" for k, v in answer.items()), content_type="text/html; charset=UTF-8")

    # --- REST -------------------------------------------------------------------------

    @app.get("/magento_version")
    def magento_version():
        return Response(f"Magento/{state.version.rsplit('.', 1)[0]} (Community)", content_type="text/plain")

    @app.route("/rest/<path:path>", methods=["GET", "POST", "PUT", "DELETE"])
    @app.route("/index.php/rest/<path:path>", methods=["GET", "POST", "PUT", "DELETE"])
    def rest(path: str):
        # Requests in flight at once, counted here at the store's side (the per-store cap).
        with state.lock:
            state.counters.in_flight += 1
            state.counters.max_in_flight = max(state.counters.max_in_flight, state.counters.in_flight)
        try:
            return _rest(path)
        finally:
            with state.lock:
                state.counters.in_flight -= 1

    def _rest(path: str):
        if state.latency:
            time.sleep(state.latency)
        segments = path.split("/")
        store_code = "default"
        if segments and segments[0] != "V1":
            store_code = segments.pop(0)
        if segments in (["schema"], ["async", "schema"], ["async", "bulk", "schema"]):
            return _schema(state, segments, request.environ)
        mode = None
        if state.async_api and request.method != "GET":  # async routes exist for writes only
            if segments[:2] == ["async", "V1"]:
                mode, segments = "async", segments[1:]
            elif segments[:3] == ["async", "bulk", "V1"]:
                mode, segments = "bulk", segments[2:]
        if not segments or segments[0] != "V1":
            return error('Request does not match any route.', 404)
        # Magento's REST router matches on the trimmed path: /V1/products/ is /V1/products.
        route = "/" + "/".join(segments[1:]).strip("/")
        body = request.get_data(as_text=True)
        try:
            integration = oauth_provider.rest_user(state, request.environ, body)
        except oauth_provider.OAuthFailure as exc:
            return error(exc.message, 401 if exc.status == 401 else 400)
        except Exception as exc:  # noqa: BLE001
            return error(f"Internal Error. Details are available in Magento log file. ({type(exc).__name__})", 500)
        # Injected failures come after the nonce is spent: a gateway timeout can follow a request
        # Magento already checked, and only then does a retry that reuses the nonce fail.
        failure = state.take_failure(route)
        if failure:
            headers = {"Retry-After": "0"} if failure == 429 else {}
            return Response("<html>upstream failure</html>", failure, headers=headers)
        resource = _resource_for(route)
        if integration is None or not _allowed(integration, resource):
            return error("The consumer isn't authorized to access %resources.", 401, {"resources": resource})
        state.counters.rest_calls += 1
        if mode is not None:
            return _accepted(state, mode, route, store_code, body)
        response = _dispatch(state, request.method, route, store_code, request.args, body)
        if request.args.get("fields") and response.status_code == 200:
            response.set_data(json.dumps(changes.select_fields(json.loads(response.get_data()),
                                                               request.args["fields"])))
        return response

    # --- control: the catalogue changes on demand (a sandbox, so no credentials) -----------

    def changed(do, *args):
        try:
            return ok(do(state, *args))
        except KeyError as exc:
            return error(f"no such record {exc.args[0]!r}", 404)
        except (ValueError, TypeError) as exc:
            return error(str(exc), 400)

    def body_fields() -> dict:
        payload = request.get_json(force=True, silent=True)  # reads the body: over the limit is a 413
        return payload if isinstance(payload, dict) else {}

    @app.put("/sandbox/integrations/<int:integration_id>/resources")
    def control_resources(integration_id: int):
        """Grant an integration these resources (a JSON list; ``["Magento_Backend::all"]`` is
        *Resource Access: All*), as editing its API tab in Magento does."""
        integration = state.integrations.get(integration_id) or abort(404)
        granted = request.get_json(force=True, silent=True)
        if not isinstance(granted, list) or not all(isinstance(r, str) and len(r) <= 100 for r in granted[:50]):
            return error("send a JSON list of ACL resource names", 400)
        with state.lock:
            integration.resources = tuple(granted[:50])
            state.save()
        return ok({"id": integration.id, "resources": list(integration.resources)})

    @app.put("/sandbox/config")
    def control_config():
        """Store switches: ``input_limit`` (the maximum pageSize, null for input limits off),
        ``async_api`` (Magento_WebapiAsync) and ``async_events`` (aligent's module)."""
        fields = body_fields()
        if "input_limit" in fields:
            limit = fields["input_limit"]
            if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 10000):
                return error("input_limit must be null or a number from 1 to 10000", 400)
            state.input_limit = limit
        for switch, attribute in (("async_api", "async_api"), ("async_events", "async_events_module")):
            if switch in fields:
                if not isinstance(fields[switch], bool):
                    return error(f"{switch} must be true or false", 400)
                setattr(state, attribute, fields[switch])
        return ok({"input_limit": state.input_limit, "async_api": state.async_api,
                   "async_events": state.async_events_module})

    @app.post("/sandbox/products")
    def control_create_product():
        return changed(changes.create_product, body_fields())

    @app.put("/sandbox/products/<sku>")
    def control_update_product(sku: str):
        return changed(changes.update_product, sku, body_fields())

    @app.delete("/sandbox/products/<sku>")
    def control_delete_product(sku: str):
        return changed(changes.delete_product, sku)

    @app.put("/sandbox/stock/<sku>")
    def control_stock(sku: str):
        qty = body_fields().get("qty")
        if not isinstance(qty, (int, float)) or isinstance(qty, bool):
            return error("qty must be a number", 400)
        return changed(changes.set_stock, sku, qty)

    @app.post("/sandbox/integrations/<int:integration_id>/age")
    def control_age_consumer(integration_id: int):
        """Move the consumer's ``updated_at`` back by ``seconds``, as if the callback had been posted
        that long ago: the expired-consumer case without waiting five minutes."""
        integration = state.integrations.get(integration_id)
        seconds = body_fields().get("seconds")
        if integration is None:
            return error(f"no such integration {integration_id}", 404)
        if not isinstance(seconds, int) or isinstance(seconds, bool) or not 0 <= seconds <= 10**7:
            return error("seconds must be a whole number from 0 to 10000000", 400)
        with state.lock:
            integration.consumer_updated_at -= seconds
            state.save()
        return ok({"id": integration.id, "consumer_updated_at": integration.consumer_updated_at,
                   "expired": oauth_provider.consumer_expired(integration, state.consumer_expiry)})

    @app.get("/sandbox/counters")
    def control_counters():
        """What the store saw: REST calls answered, and the most that were in flight at once."""
        c = state.counters
        return ok({"rest_calls": c.rest_calls, "max_in_flight": c.max_in_flight})

    @app.delete("/sandbox/counters")
    def control_reset_counters():
        with state.lock:
            state.counters.max_in_flight = state.counters.in_flight
        return ok(True)

    @app.post("/sandbox/orders")
    def control_place_order():
        fields = body_fields()
        return changed(changes.place_order, fields.get("sku"), fields.get("customer_email"))

    @app.put("/sandbox/orders/<int:order_id>")
    def control_update_order(order_id: int):
        status = body_fields().get("status")
        if not isinstance(status, str) or not status:
            return error("status is required", 400)
        return changed(changes.update_order, order_id, status[:32])

    return app


def error(message: str, status: int, parameters=None) -> Response:
    payload = {"message": message}
    if parameters is not None:
        payload["parameters"] = parameters
    return Response(json.dumps(payload), status, content_type="application/json; charset=utf-8")


def ok(payload) -> Response:
    return Response(_json(payload), 200, content_type="application/json; charset=utf-8")


def _json(payload) -> bytes:
    """Compact UTF-8 JSON, as a store answers (orjson: a page of products costs the standard
    encoder more than the rest of the request together)."""
    try:
        return orjson.dumps(payload)
    except TypeError:  # what orjson does not write (an integer past 64 bits): the standard encoder
        return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def _schema(state: SandboxState, segments: list[str], environ) -> Response:
    """Magento's schema routes (``Webapi\\Controller\\Rest::processSchemaRequest``, and
    ``WebapiAsync\\Controller\\Rest\\AsynchronousSchemaRequestProcessor`` for ``async/schema``):
    no ACL check of their own, but the document lists only what the caller may call. No OAuth
    header is an anonymous caller; a bad one is refused as any REST call is."""
    if segments[0] == "async" and not state.async_api:
        return error("Specified request does not match any route.", 404)
    try:
        integration = oauth_provider.rest_user(state, environ, "")
    except oauth_provider.OAuthFailure as exc:
        return error(exc.message, 401 if exc.status == 401 else 400)
    state.counters.schema_calls += 1
    base_path = request.path[: request.path.rindex("/schema")]
    document = schema.document(integration.resources if integration else (), host=request.host,
                               base_path=base_path, scheme=request.scheme, msi=state.msi,
                               async_events=state.async_events_module, version=state.version)
    return ok(document)


def _accepted(state: SandboxState, mode: str, route: str, store_code: str, body: str) -> Response:
    """``/rest/{store}/async/V1/…`` (one entity) and ``/rest/{store}/async/bulk/V1/…`` (a list):
    Magento_WebapiAsync publishes the operations to a queue and answers 202 with an
    ``AsyncResponseInterface`` (``WebapiAsync\\Controller\\Rest\\AsynchronousRequestProcessor``). The
    sandbox has no queue: it applies them at once, and lists any it could not as rejected."""
    import hashlib
    import uuid

    try:
        payload = json.loads(body or "null")
    except json.JSONDecodeError:
        return error("Decoding error: \nSyntax error", 400)
    entities = payload if mode == "bulk" else [payload]
    if not isinstance(entities, list):
        return error("The bulk request must be a list of entities.", 400)
    items = []
    for i, entity in enumerate(entities[:1000]):
        text = json.dumps(entity)
        answer = _dispatch(state, request.method, route, store_code, request.args, text)
        item = {"id": i, "data_hash": hashlib.sha256(text.encode()).hexdigest(),
                "status": "accepted" if answer.status_code < 400 else "rejected"}
        if answer.status_code >= 400:
            item["error_message"] = json.loads(answer.get_data()).get("message", "")
        items.append(item)
    return Response(json.dumps({"bulk_uuid": str(uuid.uuid4()), "request_items": items,
                                "errors": any(i["status"] == "rejected" for i in items)}),
                    202, content_type="application/json; charset=utf-8")


def _async_event(state: SandboxState, method: str, route: str, body: str) -> Response:
    """aligent/magento-async-events' subscription routes (``etc/webapi.xml``)."""
    events = state.async_events
    try:
        payload = json.loads(body or "null")
    except json.JSONDecodeError:
        return error("Decoding error: \nSyntax error", 400)
    if route == "/async_event" and method == "POST":
        return ok(events.subscribe(payload))
    if route == "/async_events" and method == "GET":
        with events.lock:
            items = [events.display(i) for i in events.subscriptions]
        return ok({"items": items, "search_criteria": {}, "total_count": len(items)})
    sub_id = route[len("/async_event/"):]
    if not sub_id.isdigit() or method not in ("GET", "PUT"):
        return error("Request does not match any route.", 404)
    try:
        if method == "GET":
            with events.lock:
                return ok(events.display(int(sub_id)))
        return ok(events.update(int(sub_id), payload))
    except KeyError:
        return error(f"Webhook with subscription ID {sub_id} does not exist", 404)


def _resource_for(route: str) -> str:
    if route.startswith("/async_event"):
        return ("Aligent_AsyncEvents::async_events_save" if request.method != "GET"
                else "Aligent_AsyncEvents::async_events_get")
    if route.startswith("/products"):
        return "Magento_Catalog::products"
    if route.startswith("/orders"):
        return "Magento_Sales::sales"
    if route.startswith("/customers"):
        return "Magento_Customer::customer"
    return "Magento_Backend::store"


def _allowed(integration, resource: str) -> bool:
    return schema.allowed(integration.resources, resource)


def _page_size_refused(state: SandboxState, criteria: dict) -> Response | None:
    """Input limits (``webapi/validation/input_limit_enabled``):
    ``Framework\\Webapi\\Validator\\SearchCriteriaValidator`` throws a LocalizedException
    "Maximum SearchCriteria pageSize is %max", which the REST error processor answers with 400;
    a search without a pageSize gets ``webapi/validation/default_page_size`` (20)."""
    if state.input_limit is None:
        return None
    try:
        size = int(criteria.get("pageSize") or 0)
    except ValueError:
        return None  # search.apply says what is wrong
    if size > state.input_limit:
        state.counters.page_size_refusals += 1
        return error("Maximum SearchCriteria pageSize is %max", 400, {"max": state.input_limit})
    if not size:
        criteria["pageSize"] = "20"
    state.counters.largest_page_served = max(state.counters.largest_page_served, size or 20)
    return None


def _dispatch(state: SandboxState, method: str, route: str, store_code: str, args, body: str) -> Response:
    criteria = search.parse(list(parse_qsl(request.query_string.decode(), keep_blank_values=True)))
    if method == "GET" and route in SEARCHES:
        refused = _page_size_refused(state, criteria)
        if refused is not None:
            return refused
    try:
        if route == "/store/storeViews" and method == "GET":
            return ok([{"id": 0, "code": "admin", "name": "Admin", "website_id": 0, "store_group_id": 0,
                        "is_active": 1},
                       {"id": 1, "code": "default", "name": "Default Store View", "website_id": 1,
                        "store_group_id": 1, "is_active": 1}])
        if route == "/store/storeConfigs" and method == "GET":
            return ok([{"id": 1, "code": store_code, "website_id": 1, "locale": "en_US", "base_currency_code": "EUR",
                        "default_display_currency_code": "EUR", "timezone": "Europe/Berlin", "weight_unit": "kgs",
                        "base_url": request.host_url, "secure_base_url": request.host_url}])
        if route == "/products" and method == "GET":
            return ok(search.apply(list(state.products.values()), criteria))
        if route == "/orders" and method == "GET":
            return ok(search.apply(state.orders, criteria))
        if route == "/customers/search" and method == "GET":
            return ok(search.apply(state.customers, criteria))
        if route == "/inventory/source-items" and method == "GET" and state.msi:
            return ok(search.apply(changes.source_items(state), criteria))
        if route.startswith("/async_event") and state.async_events_module:
            return _async_event(state, method, route, body)
        if route == "/stockItems/lowStock" and method == "GET":
            return ok(_low_stock(state, request.args))
        if route == "/products" and method == "POST":
            return _save_product(state, body, None)
        if route.startswith("/products/"):
            sku = route[len("/products/"):]
            if method == "GET":
                product = state.products.get(sku)
                return ok(product) if product else _no_product()
            if method == "PUT":
                return _save_product(state, body, sku)
            if method == "DELETE":
                with state.lock:
                    if state.products.pop(sku, None) is None:
                        return _no_product()
                return ok(True)
    except ValueError as exc:
        return error(str(exc), 400)
    return error("Request does not match any route.", 404)


def _low_stock(state: SandboxState, args) -> dict:
    """``GET /V1/stockItems/lowStock?scopeId=&qty=&currentPage=&pageSize=``: CatalogInventory's
    stock items with ``qty`` below the ceiling given (Magento's StockRegistry::getLowStockItems);
    scopeId and qty are required, as in Magento's route."""
    try:
        int(args["scopeId"])
        ceiling = float(args["qty"])
        page = max(1, int(args.get("currentPage", 1)))
        size = max(0, int(args.get("pageSize", 0)))
    except (KeyError, ValueError):
        raise ValueError('"scopeId" and "qty" are required numbers') from None
    items = [i for i in changes.stock_items(state) if i["qty"] <= ceiling]
    shown = items[(page - 1) * size: page * size] if size else items
    return {"items": shown, "search_criteria": {"current_page": page, "page_size": size}, "total_count": len(items)}


SEARCHES = frozenset({"/products", "/orders", "/customers/search", "/inventory/source-items", "/async_events"})


def _no_product() -> Response:
    return error("The product that was requested doesn't exist. Verify the product and try again.", 404)


def _save_product(state: SandboxState, body: str, sku: str | None) -> Response:
    try:
        payload = json.loads(body or "null")
    except json.JSONDecodeError:
        return error("Decoding error: \nSyntax error", 400)
    if not isinstance(payload, dict) or not isinstance(payload.get("product"), dict):
        return error('"%fieldName" is required. Enter and try again.', 400, {"fieldName": "product"})
    data = payload["product"]
    sku = sku or data.get("sku")
    if not sku:
        return error('"%fieldName" is required. Enter and try again.', 400, {"fieldName": "sku"})
    with state.lock:
        current = state.products.get(sku) or {**make_product(len(state.products) + 1), "sku": sku}
        current.update({k: v for k, v in data.items() if k != "sku"})
        current["updated_at"] = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
        state.products[sku] = current
    return ok(current)


ADMIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>Integrations · Sandbox store</title>
<style>
 body{font-family:system-ui,sans-serif;margin:0;background:#f8f8f8;color:#303030}
 header{background:#373330;color:#fff;padding:12px 24px} main{padding:24px;max-width:960px}
 table{width:100%;border-collapse:collapse;background:#fff} th,td{padding:10px;border-bottom:1px solid #ddd;text-align:left}
 button{background:#eb5202;color:#fff;border:0;padding:8px 14px;cursor:pointer;font-size:14px}
 .status-Active{color:#185b00;font-weight:bold} .status-Inactive{color:#8a2d00}
 #notice{padding:12px;margin:12px 0;display:none} #notice.error{display:block;background:#fae5e5;color:#8a2d00}
 #notice.info{display:block;background:#e5f7fe}
 form.create{background:#fff;padding:16px;margin-top:24px} label{display:block;margin-top:8px}
 input[type=text],input[type=url]{width:100%;padding:6px;box-sizing:border-box}
 fieldset{margin-top:12px;border:1px solid #ddd} label.resource{margin-left:24px} .resources{color:#8a2d00}
</style></head><body>
<header><strong>Sandbox store</strong> · System › Extensions › Integrations · signature profile {{ profile }}
{% if input_limit %} · input limits on (max page size {{ input_limit }}){% endif %}</header>
<main>
<div id="notice" role="status"></div>
<table><thead><tr><th>Name</th><th>Status</th><th>Callback URL</th><th>Identity link URL</th><th>Activate</th><th></th></tr></thead>
<tbody>
{% for i in integrations %}
<tr data-integration="{{ i.id }}"><td>{{ i.name }}{% if 'Magento_Backend::all' not in i.resources %}
<br><small class="resources">Custom: {{ i.resources|join(', ') or 'nothing' }}</small>{% endif %}</td><td class="status status-{{ i.status }}">{{ i.status }}</td>
<td>{{ i.callback_url }}</td><td>{{ i.identity_url }}</td>
<td><button type="button" class="activate" data-id="{{ i.id }}" data-reauthorize="{{ 1 if i.status != 'Inactive' else 0 }}">
{{ 'Reauthorize' if i.status != 'Inactive' else 'Activate' }}</button></td>
<td><form method="post" action="{{ url_for('delete_integration', integration_id=i.id) }}">
<button type="submit" class="delete">Delete</button></form></td></tr>
{% else %}<tr><td colspan="6">No integrations yet.</td></tr>{% endfor %}
</tbody></table>
<form class="create" method="post" action="{{ url_for('create_integration') }}">
<h2>Add New Integration</h2>
<label>Name <input type="text" name="name" required></label>
<label>Callback URL <input type="url" name="callback_url" placeholder="http://127.0.0.1:5000/magento/callback"></label>
<label>Identity link URL <input type="url" name="identity_url" placeholder="http://127.0.0.1:5000/magento/identity"></label>
<fieldset><legend>API · Resource Access</legend>
<label><input type="radio" name="resource_access" value="all" checked> All</label>
<label><input type="radio" name="resource_access" value="custom"> Custom:</label>
{% for name, title in resources.items() %}
<label class="resource"><input type="checkbox" name="resources" value="{{ name }}"> {{ title }} <code>{{ name }}</code></label>
{% endfor %}</fieldset>
<p><button type="submit">Save</button></p>
</form>
</main>
<script>
// What Magento's integration.js does: tokensExchange, then the identity pop-up, polled every 500 ms.
document.querySelectorAll('button.activate').forEach(function (button) {
  button.addEventListener('click', async function () {
    const notice = document.getElementById('notice');
    const reply = await fetch('/admin/integrations/' + button.dataset.id + '/tokens_exchange?reauthorize=' + button.dataset.reauthorize);
    const data = await reply.json();
    if (data.error) { notice.className = 'error'; notice.textContent = data.error; return; }
    const url = data.identity_link_url + '?' + new URLSearchParams({oauth_consumer_key: data.oauth_consumer_key,
      success_call_back: data.success_call_back}).toString();
    const win = window.open(url, '', 'top=100, left=100, width=680, height=510, scrollbars=no');
    if (!win) { alert('Popup Blocker is enabled! Please add this site to your exception list.'); return; }
    notice.className = 'info';
    notice.textContent = 'Please setup or sign in into your 3rd party account to complete setup of this integration.';
    const timer = setInterval(function () {
      let done = win.closed;
      try { done = done || win.location.href === data.success_call_back; } catch (e) { /* other origin */ }
      if (done) { clearInterval(timer); window.location.reload(); }
    }, 500);
  });
});
</script>
</body></html>
"""
