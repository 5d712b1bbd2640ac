"""``/magento/identity``: the pop-up Magento opens after the callback.

The admin logs in (or confirms), we run the token exchange, and send the pop-up back to
Magento's ``success_call_back``, which closes it; Magento then shows the integration Active.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, abort, current_app, redirect, render_template, request, url_for
from flask_login import current_user

from .. import activation as activations
from .. import doctor
from ..accounts import logins, second_factor, service
from ..extensions import db, kept_across_commits, limiter
from ..auth.routes import login_limits
from ..forms import IdentityConfirmForm, IdentityLoginForm, IdentityRegisterForm, IdentitySecondStepForm, \
    IdentitySwitchForm
from ..magento.credentials import is_credential
from ..models import Activation, StoreLink
from ..outbound import store_policy

bp = Blueprint("identity", __name__, url_prefix="/magento")


@bp.get("/identity")
@limiter.limit(lambda: current_app.config["IDENTITY_RATE_LIMIT"])  # anyone may open it, and it may write
@kept_across_commits()  # the doctor's note commits; the page shows what was read before it
def start():
    key = request.args.get("oauth_consumer_key", "")
    link, activation = _lookup(key)
    verdict = doctor.popup_opened(link, activation, key, request.remote_addr) if is_credential(key) else None
    if activation is None or verdict == "no_callback":
        return _no_callback(key, activation)
    success_call_back = request.args.get("success_call_back", "")
    if verdict == "expired":
        # Say so before anything is tried: the store would only answer "Consumer key has expired".
        return render_template("identity/expired.html", link=link, activation=activation,
                               cause=doctor.CAUSES["expired"], checklist=doctor.checklist(),
                               switch=_switch_form(key, success_call_back)), 410
    left = _seconds_left(activation)
    return render_template("identity/link.html", form=_form(key, success_call_back), link=link,
                           register=_register_form(key, success_call_back), switch=_switch_form(key, success_call_back),
                           seconds_left=left, window=doctor.window())


def _seconds_left(activation: Activation) -> int | None:
    """Our estimate of Magento's window left for an exchange still to run (None: nothing to run)."""
    if activation.state in (Activation.RECEIVED, Activation.FAILED):
        return doctor.seconds_left(activation)
    return None


@bp.post("/identity")
@login_limits
@kept_across_commits()  # the login and the exchange commit as they go; link_store reads again what may change
def submit():
    form = _form(request.form.get("oauth_consumer_key", ""), request.form.get("success_call_back", ""))
    link, activation = _lookup(form.oauth_consumer_key.data or "")
    if activation is None:
        return _no_callback(form.oauth_consumer_key.data or "")
    if not form.validate_on_submit():
        return render_template("identity/link.html", form=form, link=link,
                               switch=_switch_form(link.consumer_key, form.success_call_back.data or "")), 400
    if isinstance(form, IdentityLoginForm):
        try:
            done = second_factor.log_in(form.email.data, form.password.data, resume={
                "oauth_consumer_key": link.consumer_key, "success_call_back": form.success_call_back.data or ""})
        except logins.LoginRefused as refused:
            doctor.login(link, activation, user=None, remote_addr=request.remote_addr, refused=str(refused))
            return render_template("identity/link.html", form=_form(link.consumer_key, form.success_call_back.data),
                                   link=link, error=str(refused),
                                   register=_register_form(link.consumer_key, form.success_call_back.data),
                                   seconds_left=_seconds_left(activation), window=doctor.window()), \
                *logins.answer(refused)
        if not done:
            doctor.login(link, activation, user=None, remote_addr=request.remote_addr,
                         detail="password accepted; second factor next")
            return redirect(url_for("identity.second_step"))
        doctor.login(link, activation, user=current_user, remote_addr=request.remote_addr, commit=False)
    else:
        doctor.login(link, activation, user=current_user, remote_addr=request.remote_addr, detail="already signed in",
                     commit=False)
    return _link_store(link, activation, form.success_call_back.data or "")


@bp.route("/identity/second-step", methods=["GET", "POST"])
@login_limits
@kept_across_commits()
def second_step():
    """The second factor inside the pop-up; Magento's key and success_call_back wait in the pending login,
    and the store is linked as soon as it passes."""
    found = second_factor.pending()
    resume = found[1] if found else {}
    link, activation = _lookup(resume.get("oauth_consumer_key", ""))
    if activation is None:
        return _no_callback(resume.get("oauth_consumer_key", ""))
    form = IdentitySecondStepForm()
    if form.validate_on_submit():
        try:
            second_factor.finish(form.code.data, form.passkey.data)
        except logins.LoginRefused as refused:
            doctor.login(link, activation, user=None, remote_addr=request.remote_addr,
                         refused=f"second factor: {refused}")
            return render_template("identity/second_step.html", form=IdentitySecondStepForm(formdata=None),
                                   link=link, error=str(refused), offer_passkey=second_factor.pending_has_passkey()), \
                *logins.answer(refused)
        doctor.login(link, activation, user=current_user, remote_addr=request.remote_addr, detail="second factor",
                     commit=False)
        return _link_store(link, activation, resume.get("success_call_back", ""))
    return render_template("identity/second_step.html", form=form, link=link,
                           offer_passkey=second_factor.pending_has_passkey()), 400 if form.is_submitted() else 200


@bp.post("/identity/register")
@login_limits
def register():
    """Self-registration (when enabled): a new merchant signs up and links the store in one step."""
    if not current_app.config.get("SELF_REGISTRATION"):
        abort(404)
    form = IdentityRegisterForm()
    link, activation = _lookup(form.oauth_consumer_key.data or "")
    if activation is None:
        return _no_callback(form.oauth_consumer_key.data or "")
    if form.validate_on_submit():
        try:
            email = service.sign_up(form.email.data, form.password.data, remote_addr=request.remote_addr)
        except service.AccountError as exc:
            form.email.errors = [str(exc)]
        else:
            # Not logged in yet, whether the address was free or taken: the answer must be the same.
            login_form = IdentityLoginForm(data={"oauth_consumer_key": link.consumer_key, "email": email,
                                                 "success_call_back": form.success_call_back.data or ""})
            return render_template("identity/link.html", form=login_form, link=link, signed_up=email)
    login_form = _form(link.consumer_key, form.success_call_back.data or "")
    return render_template("identity/link.html", form=login_form, register=form, link=link), 400


@bp.post("/identity/switch")
@login_limits
def switch():
    """"Not you? Use another account": log out, and back to the same linking step (Magento's key and
    success_call_back kept, so the pop-up still ends where Magento expects)."""
    form = IdentitySwitchForm()
    if not form.validate_on_submit():
        abort(400)
    if current_user.is_authenticated:
        logins.log_out()
    return redirect(url_for("identity.start", oauth_consumer_key=form.oauth_consumer_key.data,
                            success_call_back=form.success_call_back.data or ""))


def _link_store(link: StoreLink, activation: Activation, success_call_back: str):
    """Run (or wait for) the token exchange, then send the pop-up back to Magento."""
    user = current_user._get_current_object()
    if second_factor.required(user) and not second_factor.has_second_factor(user):
        # INTEGRATION_REQUIRE_2FA: nothing but enrolling until then (the dashboard's guard, in the pop-up).
        db.session.commit()  # the doctor's login step
        return render_template("identity/error.html", link=link, title="Set up a second factor first",
                               message="This account must have a second factor before it can link stores.",
                               hint="Open Your account in this app, set up an authenticator app or a passkey, "
                                    "then start the link again from Magento.",
                               switch=_switch_form(link.consumer_key, success_call_back)), 403
    try:
        activations.link_store(activation, current_user._get_current_object(), request.remote_addr)
    except activations.LinkRefused as refused:
        db.session.commit()  # the doctor's login step, when nothing was tried
        return render_template("identity/error.html", link=link, title=refused.title, message=refused.message,
                               hint=refused.hint, switch=_switch_form(link.consumer_key, success_call_back)), \
            refused.status
    db.session.commit()
    return _back_to_magento(link, success_call_back)


def _no_callback(key: str, last: Activation | None = None):
    """The callback of this click never reached us (``last``: the latest one that did, long ago)."""
    return render_template("identity/no_callback.html", consumer_key=key[:64], last=last), 404


def _lookup(key: str) -> tuple[StoreLink | None, Activation | None]:
    if not is_credential(key):
        return None, None
    link = StoreLink.by_consumer_key(key)
    return link, (activations.current_activation(link) if link else None)


def _form(key: str, success_call_back: str):
    data = {"oauth_consumer_key": key, "success_call_back": success_call_back}
    if current_user.is_authenticated:
        return IdentityConfirmForm(data=data)
    return IdentityLoginForm(data=data)


def _switch_form(key: str, success_call_back: str):
    if not current_user.is_authenticated:
        return None
    return IdentitySwitchForm(formdata=None, data={"oauth_consumer_key": key, "success_call_back": success_call_back})


def _register_form(key: str, success_call_back: str):
    if current_user.is_authenticated or not current_app.config.get("SELF_REGISTRATION"):
        return None
    return IdentityRegisterForm(formdata=None, data={"oauth_consumer_key": key,
                                                     "success_call_back": success_call_back})


def _back_to_magento(link: StoreLink, target: str):
    if not target:
        return render_template("identity/done.html", link=link)
    if is_safe_callback(target, link):
        return redirect(target, 302)
    return render_template("identity/confirm_redirect.html", link=link, target=target)


def is_safe_callback(target: str, link: StoreLink) -> bool:
    """``success_call_back`` may only lead back to the store (or an allow-listed host)."""
    try:
        parts = urlsplit(target)
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
        return False
    if any(c in target for c in "\r\n\t\\ "):
        return False
    host = parts.hostname.lower()
    return host == link.store_host or store_policy().is_listed(host)
