"""``flask --app app ...`` commands for what operators script."""

from __future__ import annotations

import click
from flask import Flask
from flask.cli import AppGroup
from sqlalchemy import select

from .extensions import db
from .models import User

users = AppGroup("users", help="Accounts of this app (the people who link stores).")


@users.command("create")
@click.argument("email")
@click.option("--password", help="Prompted for (hidden) when omitted.")
@click.option("--admin", is_flag=True, help="Admins see every store and manage accounts.")
def create_user(email: str, password: str | None, admin: bool) -> None:
    """Create an account."""
    email = email.strip().lower()
    if "@" not in email or len(email) > 254:
        raise click.BadParameter("not an email address", param_hint="EMAIL")
    if User.by_email(email):
        raise click.ClickException(f"an account for {email} already exists")
    if password is None:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    if len(password) < 10:
        raise click.BadParameter("use at least 10 characters", param_hint="--password")
    user = User(email=email, role="admin" if admin else "member")
    user.set_password(password)
    db.session.add(user)
    db.session.commit()
    click.echo(f"created {'admin' if admin else 'member'} {email} (id {user.id})")


@users.command("list")
def list_users() -> None:
    """List accounts."""
    for user in db.session.scalars(select(User).order_by(User.id)):
        click.echo(f"{user.id}\t{user.email}\t{user.role}\t{'active' if user.active else 'disabled'}")


@click.command("sandbox")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5001, show_default=True, type=int)
@click.option("--profile", default="2.4.8+", show_default=True,
              type=click.Choice(["2.4.8+", "2.4.4-2.4.7", "patch-37278"]), help="How the store checks signatures.")
@click.option("--products", default=2000, show_default=True, type=int, help="Generated catalogue size.")
@click.option("--latency", default=0.0, show_default=True, type=float, help="Seconds added to each REST call.")
@click.option("--bearer", is_flag=True, help="Accept access tokens as bearer tokens (enable_integration_as_bearer).")
@click.option("--app-url", default="http://127.0.0.1:5000", show_default=True,
              help="Where this app runs: the sandbox's first integration points its URLs here.")
def sandbox(host: str, port: int, profile: str, products: int, latency: float, bearer: bool, app_url: str) -> None:
    """Run the sandbox Magento store (for trying an activation locally)."""
    from werkzeug.serving import run_simple

    from .sandbox import SandboxState, create_sandbox

    state = SandboxState(profile=profile, products=products, latency=latency, bearer=bearer)
    app_url = app_url.rstrip("/")
    state.add_integration("Companion (local)", f"{app_url}/magento/callback", f"{app_url}/magento/identity")
    click.echo(f"Sandbox store on http://{host}:{port}/admin/integrations — click Activate.")
    run_simple(host, port, create_sandbox(state), threaded=True)


def init_app(app: Flask) -> None:
    app.cli.add_command(users)
    app.cli.add_command(sandbox)
