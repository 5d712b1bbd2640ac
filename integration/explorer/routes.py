"""``/stores/<id>/explorer``: admins browse the store's schema and try its operations.

The browser never talks to the store: the schema comes from our cached copy (the last probe)
with its host and base path pointing at a path of ours that serves nothing, and Swagger UI's
request interceptor (``static/explorer.js``) turns *Execute* into a CSRF-protected form post to
``…/explorer/call``. That post is the console's own form and service call
(``dashboard.routes.console_call``): the same validation (a write needs the confirmation tick),
one audit entry per call, the tokens only ever on the server.
"""

from __future__ import annotations

from flask import Blueprint, jsonify, render_template, request, url_for
from flask_login import login_required

from .. import probe
from ..dashboard.forms import ActionForm, ConsoleForm
from ..dashboard.routes import STORE, _visible, admin_required, console_call

bp = Blueprint("explorer", __name__)


def _base_path(link_id: int, store_code: str) -> str:
    return f"/stores/{link_id}/explorer/rest/{store_code}"


@bp.get(STORE + "/explorer")
@login_required
@admin_required
def page(link_id: int):
    link = _visible(link_id)
    found = probe.capabilities_of(link)
    store_code = (found.schema_store_code if found else None) or "default"
    return render_template("explorer/page.html", link=link, capabilities=found, action=ActionForm(),
                           has_schema=bool(found and found.known),
                           spec_url=url_for("explorer.schema", link_id=link.id),
                           call_url=url_for("explorer.call", link_id=link.id),
                           base_path=_base_path(link.id, store_code), store_code=store_code)


@bp.get(STORE + "/explorer/schema.json")
@login_required
@admin_required
def schema(link_id: int):
    link = _visible(link_id)
    document = probe.schema_of(link)
    if document is None:
        return jsonify(message="No schema yet: probe the store first."), 404
    found = probe.capabilities_of(link)
    # Calls go to a path of ours (the interceptor posts them to /call); never to the store.
    document.update(host=request.host, schemes=[request.scheme],
                    basePath=_base_path(link.id, found.schema_store_code or "default"))
    response = jsonify(document)
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post(STORE + "/explorer/call")
@login_required
@admin_required
def call(link_id: int):
    """*Try it*: the console's form, answered as JSON with the store's status, so Swagger UI
    shows what the store said."""
    link = _visible(link_id)
    form = ConsoleForm()
    if not form.validate_on_submit():
        problems = []
        for name, errors in form.errors.items():
            if name == "csrf_token":
                problems.append("The form expired (CSRF): reload the page.")
            elif name == "confirm":  # the box is at the top of the explorer, not next to the operation
                problems.append(f"{'; '.join(errors)} (the box at the top of this page)")
            else:
                problems.append(f"{getattr(form, name).label.text}: {'; '.join(errors)}")
        return jsonify(message=" ".join(problems)), 400
    result = console_call(link, form)
    if result["ok"]:
        return jsonify(result["payload"]), 200
    status = result["status"] if isinstance(result["status"], int) and 400 <= result["status"] < 600 else 502
    return jsonify(message=result["message"], hint=result["hint"]), status
