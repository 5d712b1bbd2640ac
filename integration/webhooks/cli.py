"""``flask --app app webhooks ...``: endpoints, their deliveries, running the outbox."""

from __future__ import annotations

import datetime as dt

import click
from flask.cli import AppGroup

from ..events import TYPES
from . import service

webhooks = AppGroup("webhooks", help="Webhook endpoints that receive store lifecycle events.")


def _fail(exc: Exception) -> click.ClickException:
    return click.ClickException(str(exc))


@webhooks.command("add")
@click.argument("url")
@click.option("--event", "types", multiple=True, type=click.Choice([*TYPES, "*"]),
              help="An event type to send (repeatable); every type when omitted.")
def add_endpoint(url: str, types: tuple[str, ...]) -> None:
    """Register an endpoint; prints its signing secret, once."""
    try:
        endpoint, secret = service.add(url, types)
    except service.WebhookError as exc:
        raise _fail(exc) from None
    click.echo(f"added endpoint {endpoint.id}: {endpoint.url} ({endpoint.event_types})")
    click.echo(f"signing secret (shown only now): {secret}")


@webhooks.command("list")
def list_endpoints() -> None:
    """Endpoints with their event types and how their deliveries stand."""
    from sqlalchemy import func, select

    from ..extensions import db
    from .models import WebhookDelivery

    counts = {(e, s): n for e, s, n in db.session.execute(
        select(WebhookDelivery.endpoint_id, WebhookDelivery.state, func.count())
        .group_by(WebhookDelivery.endpoint_id, WebhookDelivery.state))}
    for endpoint in service.endpoints():
        states = ", ".join(f"{s} {counts.get((endpoint.id, s), 0)}"
                           for s in (WebhookDelivery.PENDING, WebhookDelivery.DELIVERED, WebhookDelivery.FAILED))
        rotating = " (rotating secret)" if endpoint.previous_secret_until else ""
        click.echo(f"{endpoint.id}\t{endpoint.url}\t{endpoint.event_types}\t{states}{rotating}")


@webhooks.command("remove")
@click.argument("endpoint_id", type=int)
def remove_endpoint(endpoint_id: int) -> None:
    """Delete an endpoint and its delivery log."""
    try:
        service.remove(endpoint_id)
    except service.WebhookError as exc:
        raise _fail(exc) from None
    click.echo(f"removed endpoint {endpoint_id}")


@webhooks.command("rotate-secret")
@click.argument("endpoint_id", type=int)
@click.option("--grace-hours", type=click.FloatRange(0, 24 * 30), default=24.0, show_default=True,
              help="How long the old secret goes on signing too (a second v1 in the header).")
def rotate_secret(endpoint_id: int, grace_hours: float) -> None:
    """Give an endpoint a new signing secret; prints it, once."""
    try:
        endpoint, secret = service.rotate_secret(endpoint_id, dt.timedelta(hours=grace_hours))
    except service.WebhookError as exc:
        raise _fail(exc) from None
    click.echo(f"new signing secret for endpoint {endpoint.id} (shown only now): {secret}")
    if grace_hours:
        click.echo(f"the old secret also signs until {endpoint.previous_secret_until:%Y-%m-%d %H:%M} UTC")


@webhooks.command("deliveries")
@click.argument("endpoint_id", type=int)
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
def list_deliveries(endpoint_id: int, limit: int) -> None:
    """The latest deliveries to an endpoint: event, state, attempts, last answer."""
    try:
        service.get(endpoint_id)
    except service.WebhookError as exc:
        raise _fail(exc) from None
    for d in service.deliveries(endpoint_id, limit):
        answer = d.last_error or (f"HTTP {d.last_status}" if d.last_status else "-")
        at = f"{d.last_attempt_at:%Y-%m-%d %H:%M:%S}" if d.last_attempt_at else "-"
        click.echo(f"{d.id}\t{d.event.public_id}\t{d.event.type}\t{d.state}\t{d.attempts}\t{at}\t{answer}")


@webhooks.command("replay")
@click.argument("delivery_id", type=int)
def replay_delivery(delivery_id: int) -> None:
    """Send a delivery again (same event id and body)."""
    try:
        delivery = service.replay(delivery_id)
    except service.WebhookError as exc:
        raise _fail(exc) from None
    click.echo(f"delivery {delivery.id} ({delivery.event.public_id}) queued again")


@webhooks.command("dispatch")
def dispatch_now() -> None:
    """Deliver everything due now, in this process (the app and workers do it by themselves)."""
    from . import dispatch

    click.echo(f"{dispatch.run()} attempts made")
