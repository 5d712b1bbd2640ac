"""``flask --app app sync STORE_ID [ENTITY] [--full]`` and ``flask --app app jobs list|cancel|retry``."""

from __future__ import annotations

import click
from flask.cli import AppGroup, with_appcontext
from sqlalchemy import select

from ..extensions import db
from ..models import StoreLink
from . import schedule, sync
from .models import Job


@click.command("sync")
@click.argument("store_id", type=int)
@click.argument("entity", required=False, type=click.Choice(sync.ALL))
@click.option("--full", is_flag=True, help="Read every record, not only those changed since the cursor, "
                                            "and look for deletions.")
@click.option("--background", is_flag=True, help="Queue the sync on the workers instead of running it here.")
@with_appcontext
def sync_command(store_id: int, entity: str | None, full: bool, background: bool) -> None:
    """Sync a store's change feeds now (all entities unless ENTITY is given)."""
    link = db.session.get(StoreLink, store_id)
    if link is None:
        raise click.ClickException(f"no store {store_id}")
    chosen = [entity] if entity else list(schedule.entities())
    if background:
        for job in schedule.sync_soon(store_id, chosen, full=full):
            click.echo(f"queued job {job.id}: {job.entity}")
        return
    failed = False
    for name in chosen:
        # Someone asking now overrides the store's back-off; the lease still keeps one sync at a time.
        job = sync.sync(store_id, name, full=full, ignore_backoff=True)
        click.echo(f"{name}: {job.state}, {job.done} read, {job.created} created, {job.updated} updated, "
                   f"{job.deleted} deleted" + (f" ({job.error})" if job.error else ""))
        failed = failed or job.state != Job.FINISHED
    if failed:
        raise SystemExit(1)


jobs_group = AppGroup("jobs", help="Background jobs: syncs, with their state and progress.")


@jobs_group.command("list")
@click.option("--state", type=click.Choice(Job.STATES))
@click.option("--limit", type=click.IntRange(1, 1000), default=50)
def list_jobs(state: str | None, limit: int) -> None:
    """Newest first."""
    query = select(Job).order_by(Job.id.desc()).limit(limit)
    if state:
        query = query.where(Job.state == state)
    for job in db.session.scalars(query):
        progress = f"{job.done}/{job.total}" if job.total is not None else str(job.done)
        click.echo(f"{job.id}\t{job.state}\t{job.kind}\tstore {job.store_link_id}\t{job.entity or ''}\t{progress}\t"
                   f"+{job.created} ~{job.updated} -{job.deleted}\t{job.error or ''}")


@jobs_group.command("cancel")
@click.argument("job_id", type=int)
def cancel_job(job_id: int) -> None:
    try:
        job = schedule.cancel(job_id)
    except sync.FeedError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"job {job.id}: " + ("cancelled" if job.state == Job.CANCELLED else "stops after its current page"))


@jobs_group.command("retry")
@click.argument("job_id", type=int)
def retry_job(job_id: int) -> None:
    try:
        job = schedule.retry(job_id)
    except sync.FeedError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"queued job {job.id}")
