"""The API's request and response shapes (marshmallow): the views validate and serialise
with them, and the OpenAPI document is generated from them."""

from __future__ import annotations

import base64
import binascii

from marshmallow import Schema, ValidationError, fields, validate

from ..events import TYPES as EVENT_TYPES
from ..models import StoreLink
from ..web import MAX_ID

STATUSES = (StoreLink.PENDING, StoreLink.LINKED, StoreLink.FAILED, StoreLink.REVOKED, StoreLink.UNLINKED)


class StoreSchema(Schema):
    id = fields.Integer(required=True)
    label = fields.String(allow_none=True, metadata={"description": "the operators' name for it (Magento never sends the integration's)"})
    consumer_key = fields.String(required=True, metadata={
        "description": "the integration's consumer key, masked (first and last 4): tells integrations of one store apart",
        "example": "Abcd…wxyz"})
    base_url = fields.String(required=True, metadata={"example": "https://shop.example.com/"})
    status = fields.String(required=True, validate=validate.OneOf(STATUSES))
    owner = fields.String(allow_none=True, metadata={"description": "email of the account that linked it"})
    signature_profile = fields.String(allow_none=True, metadata={
        "description": "the Magento generation the store signs as (2.4.8+, 2.4.4-2.4.7, patch-37278)"})
    magento_version = fields.String(allow_none=True)
    linked_at = fields.String(allow_none=True, metadata={"format": "date-time"})
    last_contact_at = fields.String(allow_none=True, metadata={"format": "date-time"})
    revoked_at = fields.String(allow_none=True, metadata={"format": "date-time"})
    last_error = fields.String(allow_none=True)


class StorePageSchema(Schema):
    data = fields.List(fields.Nested(StoreSchema), required=True)
    next_cursor = fields.String(allow_none=True, required=True, metadata={
        "description": "pass as `cursor` for the next page; null on the last page"})


class StoreListArgs(Schema):
    status = fields.String(validate=validate.OneOf(STATUSES))
    limit = fields.Integer(load_default=50, validate=validate.Range(1, 200))
    cursor = fields.String(validate=validate.Length(max=64), metadata={
        "description": "`next_cursor` of the previous page"})


class EventStoreSchema(Schema):
    id = fields.Integer(required=True)
    base_url = fields.String(required=True)
    status = fields.String(required=True, metadata={"description": "the store's status when the event happened"})
    signature_profile = fields.String(allow_none=True)
    magento_version = fields.String(allow_none=True)


class EventSchema(Schema):
    id = fields.String(required=True, metadata={"example": "evt_5f0c2b9e8a7d6c5b4a392817"})
    type = fields.String(required=True, validate=validate.OneOf(EVENT_TYPES))
    created_at = fields.String(required=True, metadata={"format": "date-time"})
    store = fields.Nested(EventStoreSchema, required=True)
    reason = fields.String(metadata={"description": "why (store.revoked, store.check_failed)"})


class EventPageSchema(Schema):
    data = fields.List(fields.Nested(EventSchema), required=True, metadata={
        "description": "the events, oldest first, each exactly as its webhook delivers it"})
    next_after = fields.String(allow_none=True, required=True, metadata={
        "description": "pass as `after` for the events that follow; the `after` you sent when there are "
                       "none yet (null only when there have never been any)"})


class EventListArgs(Schema):
    after = fields.String(validate=validate.Length(max=40), metadata={
        "description": "an event `id`: only the events after it; omit for the oldest"})
    limit = fields.Integer(load_default=100, validate=validate.Range(1, 1000))


class CheckSchema(Schema):
    store = fields.Nested(StoreSchema, required=True)
    magento_version = fields.String(allow_none=True)
    store_configs = fields.Raw(metadata={"description": "Magento's GET /V1/store/storeConfigs answer"})


class StoreErrorSchema(Schema):
    type = fields.String(metadata={"example": "TokenRevoked"})
    message = fields.String()
    hint = fields.String(allow_none=True)
    status = fields.Integer(allow_none=True, metadata={"description": "the store's HTTP status, if it answered"})


class ErrorBodySchema(Schema):
    code = fields.String(required=True, metadata={"example": "store_unreachable"})
    message = fields.String(required=True)
    store_error = fields.Nested(StoreErrorSchema)


class ErrorSchema(Schema):
    error = fields.Nested(ErrorBodySchema, required=True)


def encode_cursor(link_id: int) -> str:
    return base64.urlsafe_b64encode(f"s{link_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if raw[:1] == "s" and raw[1:].isdigit() and int(raw[1:]) <= MAX_ID:
            return int(raw[1:])
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    raise ValidationError("not a cursor this API gave out", field_name="cursor")
