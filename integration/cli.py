"""``flask --app app ...`` commands for what operators script."""

from __future__ import annotations

import sys

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
    from .accounts import service

    try:
        email = service.normalise_email(email)
        if User.by_email(email):
            raise service.AccountError(f"an account for {email} already exists")
        if password is None:
            password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
        user = service.create(email, password, role="admin" if admin else "member")
    except service.AccountError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"created {user.role} {user.email} (id {user.id})")


def _user(email: str) -> User:
    user = User.by_email(email)
    if user is None:
        raise click.ClickException(f"no account {email}")
    return user


@users.command("disable")
@click.argument("email")
def disable_user(email: str) -> None:
    """Disable an account (it can no longer log in)."""
    from .accounts import service

    service.set_active(_user(email), False)
    click.echo(f"disabled {email}")


@users.command("enable")
@click.argument("email")
def enable_user(email: str) -> None:
    """Enable a disabled account."""
    from .accounts import service

    service.set_active(_user(email), True)
    click.echo(f"enabled {email}")


@users.command("reset-password")
@click.argument("email")
def reset_password(email: str) -> None:
    """Set a new password (prompted, hidden)."""
    from .accounts import service

    user = _user(email)
    password = click.prompt("New password", hide_input=True, confirmation_prompt=True)
    try:
        service.reset_password(user, password)
    except service.AccountError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"password changed for {email}")


@users.command("reset-2fa")
@click.argument("email")
def reset_second_factor(email: str) -> None:
    """Remove every second factor of an account and end its sessions (for a locked-out last admin)."""
    from .accounts import second_factor

    user = _user(email)
    had = second_factor.has_second_factor(user)
    second_factor.reset(user)  # sessions end either way: the command is also the "log out everywhere"
    click.echo(f"second factor removed for {email}; it logs in with its password and enrols again" if had else
               f"{email} had no second factor; its sessions are ended")


@users.command("list")
def list_users() -> None:
    """List accounts."""
    from .text import printable

    for user in db.session.scalars(select(User).order_by(User.id)):
        click.echo(f"{user.id}\t{printable(user.email)}\t{user.role}\t{'active' if user.active else 'disabled'}")


@click.command("sandbox")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5001, show_default=True, type=int)
@click.option("--profile", default="2.4.8+", show_default=True,
              type=click.Choice(["2.4.8+", "2.4.4-2.4.7", "patch-37278"]), help="How the store checks signatures.")
@click.option("--products", default=2000, show_default=True, type=int, help="Generated catalogue size.")
@click.option("--latency", default=0.0, show_default=True, type=float, help="Seconds added to each REST call.")
@click.option("--bearer", is_flag=True, help="Accept access tokens as bearer tokens (enable_integration_as_bearer).")
@click.option("--app-url", default="http://127.0.0.1:5000", show_default=True,
              help="Where this app runs: the sandbox offers an integration whose URLs point here.")
@click.option("--state", "state_file", type=click.Path(dir_okay=False),
              help="File that keeps the integrations across restarts  [default: INSTANCE/sandbox.json]")
@click.option("--churn", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Random catalogue changes per minute (edits, new and deleted products, stock, orders).")
@click.option("--input-limit", type=click.IntRange(1, 10000), default=None, metavar="MAX",
              help="Input limits on: searches refuse a pageSize above MAX (Magento's default maximum is 300).")
@click.option("--async-events", is_flag=True,
              help="Act as a store with aligent/magento-async-events: subscriptions, signed pushes on changes.")
@click.option("--push-duplicates", is_flag=True, help="With --async-events: post every event twice.")
@click.option("--push-out-of-order", is_flag=True, help="With --async-events: post each event after the next one.")
def sandbox(host: str, port: int, profile: str, products: int, latency: float, bearer: bool, app_url: str,
            state_file: str | None, churn: float | None, input_limit: int | None, async_events: bool,
            push_duplicates: bool, push_out_of_order: bool) -> None:
    """Run the sandbox Magento store (for trying an activation locally)."""
    import os

    from flask import current_app
    from werkzeug.serving import run_simple

    from .sandbox import SandboxState, StateFileError, create_sandbox

    if state_file is None:
        os.makedirs(current_app.instance_path, exist_ok=True)
        state_file = os.path.join(current_app.instance_path, "sandbox.json")
    try:
        state = SandboxState(profile=profile, products=products, latency=latency, bearer=bearer, path=state_file,
                             async_events=async_events)
    except StateFileError as exc:
        raise click.ClickException(str(exc)) from None
    state.input_limit = input_limit
    state.async_events.duplicates, state.async_events.out_of_order = push_duplicates, push_out_of_order
    app_url = app_url.rstrip("/")
    callback_url = f"{app_url}/magento/callback"
    if not any(i.callback_url == callback_url for i in state.integrations.values()):
        state.add_integration("Companion (local)", callback_url, f"{app_url}/magento/identity")
    click.echo(f"Sandbox store on http://{host}:{port}/admin/integrations — click Activate.")
    if churn:
        from .sandbox.changes import Churn

        Churn(state, churn).start()
        click.echo(f"Changing {churn:g} records a minute.")
    run_simple(host, port, create_sandbox(state), threaded=True)




# --- stores ---------------------------------------------------------------------------

stores = AppGroup("stores", help="Linked Magento stores: list, check, signed calls, exports.")


def _link(link_id: int):
    from .models import StoreLink

    link = db.session.get(StoreLink, link_id) if 0 < link_id < 2**31 else None
    if link is None:
        raise click.ClickException(f"no store with id {link_id}")
    return link


def _fail(exc) -> click.ClickException:
    from .magento.errors import MagentoError

    if isinstance(exc, MagentoError):
        status = f"HTTP {exc.status}: " if exc.status else ""
        hint = f"\n  {exc.hint}" if exc.hint else ""
        return click.ClickException(f"{status}{exc.message}{hint}")
    return click.ClickException(str(exc))


@stores.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def list_stores(as_json: bool) -> None:
    """List store links."""
    import json

    from .models import StoreLink

    from .stores import describe
    from .text import printable

    for link in db.session.scalars(select(StoreLink).order_by(StoreLink.id)):
        s = describe(link)
        if as_json:
            click.echo(json.dumps(s))
        else:
            # Store text came from outside (a callback, a label): escaped, never raw to the terminal.
            fields = (s["id"], s["status"], s["label"], s["base_url"], s["consumer_key"], s["owner"],
                      s["signature_profile"], s["last_contact_at"])
            click.echo("\t".join(printable(str(f)) if f is not None else "-" for f in fields))


@stores.command("show")
@click.argument("link_id", type=int)
def show_store(link_id: int) -> None:
    """Details and activation history of one store."""
    from .stores import describe
    from .text import printable

    link = _link(link_id)
    for key, value in describe(link).items():
        click.echo(printable(f"{key:18} {value if value is not None else '-'}"))
    click.echo("activations:")
    for a in link.activations:
        click.echo(f"  {a.received_at:%Y-%m-%d %H:%M:%S} UTC  {a.kind:11} {a.state:10} "
                   f"{printable(a.user.email) if a.user else '-'}  {printable(a.error or '')}")


@stores.command("check")
@click.argument("link_id", type=int)
def check_store(link_id: int) -> None:
    """A test call: prints the Magento version and the store configs."""
    import json

    from . import stores as store_service
    from .magento.errors import MagentoError

    link = _link(link_id)
    try:
        result = store_service.check(link, remote_addr=store_service.COMMAND_LINE)
    except MagentoError as exc:
        raise _fail(exc) from None
    click.echo(f"magento_version: {result['magento_version'] or 'hidden'}")
    click.echo(f"signature_profile: {link.signature_profile or 'not known yet'}")
    click.echo(json.dumps(result["store_configs"], indent=2, ensure_ascii=False))


@stores.command("probe")
@click.argument("link_id", type=int)
def probe_store(link_id: int) -> None:
    """Ask the store what it can do (version, store views, granted operations, input limits, async API)."""
    from . import probe
    from . import stores as store_service
    from .magento.errors import MagentoError

    link = _link(link_id)
    try:
        found = probe.probe(link, remote_addr=store_service.COMMAND_LINE)
    except MagentoError as exc:
        raise _fail(exc) from None
    click.echo(f"magento: {found.version or '?'} {found.edition or ''}".rstrip())
    click.echo(f"store views: {', '.join(v['code'] for v in found.store_views) or 'unknown (not granted)'}")
    click.echo(f"base currency: {found.base_currency or 'unknown'}")
    click.echo(f"operations granted: {len(found.operations)} "
               f"({', '.join(f'{name} {n}' for name, n in found.resources().items())})")
    limits = {True: f"on, at most {found.max_page_size} records a page", False: "off", None: "unknown"}
    click.echo(f"input limits: {limits[found.input_limits]}")
    click.echo(f"async/bulk API: {({True: 'available', False: 'not available', None: 'unknown'})[found.async_api]}")
    click.echo(f"async events module: {'yes' if found.async_events else 'no'}")
    for warning in found.warnings():
        click.echo(f"warning: {warning}")


@stores.command("call")
@click.argument("link_id", type=int)
@click.argument("method", type=click.Choice(["GET", "POST", "PUT", "DELETE"], case_sensitive=False))
@click.argument("path")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE", help="Query parameter (repeatable).")
@click.option("--data", metavar="JSON|@FILE", help="JSON body, or @file to read it from a file (@- for stdin).")
@click.option("--store-code", default="default", show_default=True, help="default, all, or a store view code.")
def call_store(link_id: int, method: str, path: str, params: tuple[str, ...], data: str | None,
               store_code: str) -> None:
    """A signed call, e.g. `stores call 1 GET products --param searchCriteria[pageSize]=5`; prints the JSON."""
    import json

    from . import stores as store_service
    from .magento.client import rest_path
    from .magento.errors import MagentoError, UnsafePath

    try:
        path = rest_path(path)
    except UnsafePath as exc:
        raise click.BadParameter(str(exc), param_hint="PATH") from None
    pairs = []
    for p in params:
        name, sep, value = p.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{p!r} is not NAME=VALUE", param_hint="--param")
        pairs.append((name, value))
    body = None
    if data is not None:
        text = click.open_file(data[1:], encoding="utf-8").read() if data.startswith("@") else data
        try:
            body = json.loads(text)
        except json.JSONDecodeError as exc:
            raise click.BadParameter(f"not JSON: {exc}", param_hint="--data") from None
        except RecursionError:
            raise click.BadParameter("not JSON we accept: nested too deeply", param_hint="--data") from None
    link = _link(link_id)
    try:
        with store_service.contact(link, "console.call", f"{method.upper()} {path}",
                                   remote_addr=store_service.COMMAND_LINE) as client:
            result = client.request(method, path, params=pairs or None, json=body, store_code=store_code)
    except (MagentoError, ValueError) as exc:
        raise _fail(exc) from None
    click.echo(json.dumps(result, indent=2, ensure_ascii=False))


@stores.command("add")
@click.option("--base-url", prompt="Store base URL", help="e.g. https://shop.example.com/")
@click.option("--consumer-key", prompt="Consumer key")
@click.option("--owner", metavar="EMAIL", help="Account the store belongs to.")
def add_store(base_url: str, consumer_key: str, owner: str | None) -> None:
    """Link an integration activated without a callback. The three secrets are prompted for
    (or read from standard input, one per line), never taken from the command line."""
    from . import stores as store_service
    from .magento.client import Credentials
    from .magento.errors import MagentoError

    owner_user = None
    if owner:
        owner_user = User.by_email(owner)
        if owner_user is None:
            raise click.ClickException(f"no account {owner}")
    secrets = [_secret(label) for label in ("Consumer secret", "Access token", "Access token secret")]
    creds = Credentials(consumer_key.strip(), *secrets)
    try:
        link = store_service.add_manual(base_url, creds, owner=owner_user, remote_addr=store_service.COMMAND_LINE)
    except (MagentoError, ValueError) as exc:
        raise _fail(exc) from None
    click.echo(f"linked store {link.id}: {link.base_url}")


def _secret(label: str) -> str:
    """Prompted for without echo at a terminal; piped, one line of standard input (getpass would warn
    that it cannot hide what is not typed)."""
    if sys.stdin.isatty():
        return click.prompt(label, hide_input=True).strip()
    line = sys.stdin.readline()
    if not line.strip():
        raise click.ClickException(f"{label}: expected one line on standard input")
    return line.strip()


@stores.command("unlink")
@click.argument("link_id", type=int)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def unlink_store(link_id: int, yes: bool) -> None:
    """Forget a store's tokens (history is kept)."""
    from . import stores as store_service

    link = _link(link_id)
    if not yes:
        click.confirm(f"Unlink {link.base_url}?", abort=True)
    store_service.unlink(link, remote_addr=store_service.COMMAND_LINE)
    click.echo(f"unlinked store {link.id}")


@stores.command("export")
@click.argument("link_id", type=int)
@click.argument("entity", type=click.Choice(["products", "orders", "customers"]))
@click.option("--since", metavar="ISO-DATE", help="Only records updated since then (updated_at).")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]),
              help="Default: csv for an --output ending in .csv, else jsonl.")
@click.option("--output", type=click.Path(dir_okay=False), help="File to write; an interrupted export is resumed.")
@click.option("--concurrency", type=click.IntRange(1, 16), default=4, show_default=True)
@click.option("--page-size", type=click.IntRange(1, 1000), default=100, show_default=True)
def export_store(link_id: int, entity: str, since: str | None, fmt: str | None, output: str | None, concurrency: int,
                 page_size: int) -> None:
    """Stream every record to a file (or standard output), resuming an interrupted file."""
    import sys

    from .feeds import exports
    from .magento.errors import MagentoError
    from .magento.export import ExportError
    from .stores import COMMAND_LINE

    link = _link(link_id)
    show_progress = output is not None and sys.stderr.isatty()
    bar = None

    def on_total(total: int) -> None:
        nonlocal bar
        if show_progress:
            bar = click.progressbar(length=total, label=f"{entity}", file=sys.stderr)
            bar.__enter__()

    try:
        count = exports.export_store(link, entity, output, fmt=fmt, since=since, concurrency=concurrency, page_size=page_size,
                                     stdout=sys.stdout, remote_addr=COMMAND_LINE, on_total=on_total,
                                     on_record=(lambda: bar.update(1)) if show_progress else None)
    except (MagentoError, ExportError) as exc:
        raise _fail(exc) from None
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    if output:
        click.echo(f"wrote {count} {entity} to {output}", err=True)


@stores.command("purge-pending")
def purge_pending() -> None:
    """Delete callbacks nobody claimed within INTEGRATION_PENDING_EXPIRY_HOURS (run it from cron
    if few callbacks arrive; each callback also deletes a batch)."""
    from .activation import purge_expired

    click.echo(f"deleted {purge_expired()} expired unclaimed store links")


# --- keys -----------------------------------------------------------------------------

keys = AppGroup("keys", help="Encryption keys for secrets at rest.")


@keys.command("rotate")
@click.option("--batch-size", default=500, show_default=True, type=click.IntRange(1, 100000))
def rotate_keys(batch_size: int) -> None:
    """Re-encrypt every stored secret under the newest key (the first in
    INTEGRATION_ENCRYPTION_KEYS). Commits batch by batch; safe to interrupt and run again."""
    from .crypto import rotate_all

    def progress(table: str, done: int) -> None:
        click.echo(f"{table}: {done} rows re-encrypted so far", err=True)

    counts = rotate_all(batch_size=batch_size, on_batch=progress)
    for table, count in counts.items():
        click.echo(f"{table}: {count} rows re-encrypted")
    click.echo("every secret is now under the newest key; older keys can be removed from the setting")


@keys.command("generate")
def generate_key() -> None:
    """Print a new Fernet key (put it first in INTEGRATION_ENCRYPTION_KEYS)."""
    from cryptography.fernet import Fernet

    click.echo(Fernet.generate_key().decode())


# --- API keys -------------------------------------------------------------------------

apikeys = AppGroup("apikeys", help="Keys other services call the service API with.")


@apikeys.command("create")
@click.argument("name")
@click.option("--scope", "scopes", multiple=True, type=click.Choice(["stores:read", "stores:call", "events:read"]),
              help="What the key may do (repeatable; default stores:read).")
@click.option("--owner", metavar="EMAIL", help="Account the key acts for (a member's key sees only their stores); "
                                               "without it the key sees every store.")
def create_api_key(name: str, scopes: tuple[str, ...], owner: str | None) -> None:
    """Create a key and print it once (it is stored only as a hash)."""
    from .apikeys import service

    owner_user = _user(owner) if owner else None
    try:
        key, plain = service.create(name, list(scopes) or ["stores:read"], owner=owner_user)
    except service.ApiKeyError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"created key {key.name} ({key.prefix}) for {owner_user.email if owner_user else 'all stores'}, "
               f"scopes: {key.scopes}", err=True)
    click.echo("This is the only time the key is shown; store it in your secret store now:", err=True)
    click.echo(plain)


@apikeys.command("list")
def list_api_keys() -> None:
    """List keys (never the keys themselves)."""
    from .apikeys import service

    for key in service.all_keys():
        used = f"{key.last_used_at:%Y-%m-%d %H:%M} from {key.last_used_addr}" if key.last_used_at else "never used"
        state = f"revoked {key.revoked_at:%Y-%m-%d}" if key.revoked_at else "active"
        click.echo(f"{key.name}\t{key.prefix}\t{key.owner.email if key.owner else 'all stores'}\t{key.scopes}\t"
                   f"{state}\t{used}")


@apikeys.command("revoke")
@click.argument("name")
def revoke_api_key(name: str) -> None:
    """Revoke a key: calls with it get 401 from now on."""
    from .apikeys import service

    key = service.by_name(name)
    if key is None:
        raise click.ClickException(f"no key named {name}")
    try:
        service.revoke(key)
    except service.ApiKeyError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"revoked {key.name} ({key.prefix})")


def init_app(app: Flask) -> None:
    app.cli.add_command(users)
    app.cli.add_command(stores)
    app.cli.add_command(keys)
    app.cli.add_command(apikeys)
    app.cli.add_command(sandbox)

