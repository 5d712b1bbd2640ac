"""The service API's views: parse, call the service, answer. Each docstring's YAML part is
this operation in the OpenAPI document (``/api/v1/openapi.json``)."""

from __future__ import annotations

import json

from flask import Response, current_app, g, jsonify, request
from marshmallow import Schema, ValidationError
from sqlalchemy.orm import undefer

from .. import events, stores
from ..extensions import db
from ..magento.errors import MagentoError
from ..models import StoreLink
from ..web import body_within
from . import bp, proxy
from .auth import caller, require
from .errors import InvalidRequest, NotFound, UnknownEvent, store_problem
from .schemas import CheckSchema, EventListArgs, StoreListArgs, StoreSchema, decode_cursor, encode_cursor


@bp.get("/stores")
@require("stores:read")
def list_stores():
    """List the stores this key may see, in id order.
    ---
    get:
      summary: List stores
      description: A member's key sees the stores that member linked; an admin's or a service key sees all.
      tags: [stores]
      parameters:
        - in: query
          schema: StoreListArgs
      responses:
        200:
          description: One page of stores.
          content:
            application/json:
              schema: StorePageSchema
        400: InvalidRequest
    """
    args = _load(StoreListArgs(), request.args)
    try:
        after = decode_cursor(args["cursor"]) if "cursor" in args else None
    except ValidationError as exc:
        raise InvalidRequest(_message(exc)) from None
    links, next_id = stores.page_after(caller().owner, after=after, status=args.get("status"), limit=args["limit"])
    schema = StoreSchema()
    return jsonify(data=[schema.dump(stores.describe(link)) for link in links],
                   next_cursor=encode_cursor(next_id) if next_id is not None else None)


@bp.get("/events")
@require("events:read")
def list_events():
    """The lifecycle events feed, for callers that cannot receive webhooks.
    ---
    get:
      summary: List events
      description: |
        The events the webhooks deliver (`store.linked`, `store.reauthorized`, `store.revoked`,
        `store.unlinked`, `store.check_failed`), oldest first, each with the same body. Poll with
        `after` set to the `next_after` of the previous answer. A member's key sees the events
        of that member's stores; an admin's or a service key sees all.
      tags: [events]
      parameters:
        - in: query
          schema: EventListArgs
      responses:
        200:
          description: The events after `after`, at most `limit`.
          content:
            application/json:
              schema: EventPageSchema
        400: UnknownEvent
    """
    args = _load(EventListArgs(), request.args)
    after = args.get("after") or None
    try:
        found = events.events_after(after, user=caller().owner, limit=args["limit"])
    except events.NoSuchEvent:
        raise UnknownEvent(f"{after!r} is not the id of an event we keep: use one this API or a webhook gave you; "
                           f"events are kept for {events.retention_days():g} days, so a cursor older than that "
                           "is gone (start again without `after`: event ids let you skip those you have)") from None
    return jsonify(data=[json.loads(event.payload) for event in found],
                   next_after=found[-1].public_id if found else after)


@bp.get("/stores/<int:link_id>")
@require("stores:read")
def get_store(link_id: int):
    """One store.
    ---
    get:
      summary: Get a store
      tags: [stores]
      parameters:
        - {in: path, name: link_id, required: true, schema: {type: integer}}
      responses:
        200:
          description: The store.
          content:
            application/json:
              schema: StoreSchema
        404: NotFound
    """
    return jsonify(StoreSchema().dump(stores.describe(_visible(link_id))))


@bp.post("/stores/<int:link_id>/check")
@require("stores:call")
def check_store(link_id: int):
    """Test the connection: a signed call to the store's configs, and its Magento version.
    ---
    post:
      summary: Test a store's connection
      description: Records the contact (or the failure) on the store, as the dashboard's Test connection does.
      tags: [stores]
      parameters:
        - {in: path, name: link_id, required: true, schema: {type: integer}}
      responses:
        200:
          description: The store answered.
          content:
            application/json:
              schema: CheckSchema
        404: NotFound
        409: StoreProblem
        502: StoreProblem
        503: StoreProblem
        504: StoreProblem
    """
    link = _visible(link_id, with_secrets=True)
    try:
        result = stores.check(link, user=caller().owner, remote_addr=request.remote_addr)
    except MagentoError as exc:
        raise store_problem(exc) from None
    return jsonify(CheckSchema().dump({"store": stores.describe(link), **result}))


@bp.route("/stores/<int:link_id>/rest/<store_code>/V1/<path:path>", methods=["GET", "POST", "PUT", "DELETE"])
@require("stores:call")
def call_store(link_id: int, store_code: str, path: str):
    """The signing proxy: Magento's REST API of one store, signed with its tokens.
    ---
    get: &proxy
      summary: Call a store's REST API
      description: |
        Everything after `/V1/` and the query string go to `{store}/rest/{store_code}/V1/...`,
        signed with the store's tokens and signature profile; a JSON body is passed on too.
        Magento's status and JSON come back as they came, with `X-Companion-Store-Status`
        and `X-Companion-Elapsed-Ms`. Our own JSON errors only when the store could not be
        reached (502), is too slow (504), revoked our token (503, the store is marked
        revoked), is not linked (409) or has too many calls in flight (429, `Retry-After`).
        GET, PUT and DELETE are retried on connection errors, 429 and 502-504; POST never.
        A literal `+` in a query value must be sent as `%2B`.
      tags: [proxy]
      parameters:
        - {in: path, name: link_id, required: true, schema: {type: integer}}
        - {in: path, name: store_code, required: true, schema: {type: string, pattern: '^[a-z0-9_]{1,64}$'},
           example: default}
        - {in: path, name: path, required: true, schema: {type: string}, example: products,
           description: "Magento's path after /V1/; may contain slashes; no . or .. segments"}
      responses:
        default:
          description: Magento's own answer (any status), as it came.
          headers:
            X-Companion-Store-Status: {description: the store's link status after the call, schema: {type: string}}
            X-Companion-Elapsed-Ms: {description: time the store took, schema: {type: number}}
          content:
            application/json: {schema: {}}
        400: InvalidRequest
        404: NotFound
        409: StoreProblem
        429: StoreBusy
        502: StoreProblem
        503: StoreProblem
        504: StoreProblem
    delete: *proxy
    put: &with_body
      <<: *proxy
      requestBody:
        description: JSON, passed on to Magento as it is (at most 1 MiB).
        required: false
        content:
          application/json: {schema: {}}
    post: *with_body
    """
    tail = proxy.rest_path(request.environ.get("RAW_URI"), path)
    # Flask answers HEAD with the GET view: the store gets a GET, the caller no body.
    method = "GET" if request.method == "HEAD" else request.method
    body = proxy.json_body(body_within(current_app.config["MAX_CONTENT_LENGTH"])) if method != "GET" else None
    answer = proxy.forward(link_id, caller(), method, tail, store_code, list(request.args.items(multi=True)), body,
                           request.remote_addr)
    headers = [*answer.headers.items(), ("X-Companion-Store-Status", answer.store_status),
               ("X-Companion-Elapsed-Ms", f"{answer.elapsed_ms:.1f}")]
    return Response(answer.body, answer.status, headers=headers, content_type=answer.content_type)


def _visible(link_id: int, *, with_secrets: bool = False) -> StoreLink:
    query = stores.visible_to(caller().owner).where(StoreLink.id == link_id)
    if with_secrets:  # one query rather than three lazy loads
        query = query.options(undefer(StoreLink.consumer_secret), undefer(StoreLink.access_token),
                              undefer(StoreLink.access_token_secret))
    link = db.session.scalar(query)
    if link is None:  # someone else's store is as absent as a missing one
        raise NotFound(f"no store {link_id} for this key")
    g.api_store_link_id = link.id
    return link


def _load(schema: Schema, data) -> dict:
    try:
        return schema.load(data)
    except ValidationError as exc:
        raise InvalidRequest(_message(exc)) from None


def _message(exc: ValidationError) -> str:
    messages = exc.normalized_messages()
    return "; ".join(f"{name}: {' '.join(map(str, errs)) if isinstance(errs, list) else errs}"
                     for name, errs in messages.items())
