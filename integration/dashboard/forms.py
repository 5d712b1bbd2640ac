"""Dashboard forms."""

from __future__ import annotations

import json

from flask_wtf import FlaskForm
from wtforms import BooleanField, PasswordField, SelectField, StringField, SubmitField, TextAreaField
from wtforms.validators import URL, DataRequired, Length, Optional, Regexp, ValidationError

from ..magento.client import rest_path
from ..magento.errors import UnsafePath
from ..magento.credentials import RULE, is_credential


def credential(form, field) -> None:
    if not is_credential(field.data):
        raise ValidationError(f"{RULE}, as Magento shows it")


class ActionForm(FlaskForm):
    """A bare POST with CSRF protection (Test connection, Unlink)."""

    submit = SubmitField("Go")


class LabelForm(FlaskForm):
    # What a label may be is the service's rule (stores.set_label), said at this field.
    label = StringField("Label", render_kw={"placeholder": "the integration's name in Magento"})
    submit = SubmitField("Save label")


class ConsoleForm(FlaskForm):
    method = SelectField("Method", choices=["GET", "POST", "PUT", "DELETE"], default="GET")
    path = StringField("Path (after /V1/)", validators=[DataRequired(), Length(max=500)],
                       render_kw={"placeholder": "products"})
    store_code = StringField("Store code", default="default", validators=[DataRequired(), Length(max=64),
                                                                          Regexp(r"^[a-z0-9_]+$")])
    params = TextAreaField("Query parameters (one NAME=VALUE per line)", validators=[Optional(), Length(max=10000)],
                           render_kw={"rows": 4, "placeholder": "searchCriteria[pageSize]=5"})
    body = TextAreaField("JSON body", validators=[Optional(), Length(max=100000)], render_kw={"rows": 6})
    confirm = BooleanField("I understand this changes data in the store")
    submit = SubmitField("Send signed request")

    def validate_path(self, field):
        try:
            rest_path(field.data or "")
        except UnsafePath as exc:
            raise ValidationError(str(exc)) from None

    def validate_params(self, field):
        for line in (field.data or "").splitlines():
            if line.strip() and "=" not in line:
                raise ValidationError(f"{line.strip()[:50]!r} is not NAME=VALUE")

    def validate_body(self, field):
        if field.data and field.data.strip():
            try:
                json.loads(field.data)
            except json.JSONDecodeError as exc:
                raise ValidationError(f"not JSON: {exc}") from None
            except RecursionError:
                raise ValidationError("not JSON we accept: nested too deeply") from None

    def validate_confirm(self, field):
        if self.method.data != "GET" and not field.data:
            raise ValidationError(f"Tick this box to send a {self.method.data}: it changes the store's data.")

    def pairs(self) -> list[tuple[str, str]]:
        out = []
        for line in (self.params.data or "").splitlines():
            if line.strip():
                name, _, value = line.strip().partition("=")
                out.append((name.strip(), value.strip()))
        return out

    def json_body(self):
        return json.loads(self.body.data) if self.body.data and self.body.data.strip() else None


class ManualLinkForm(FlaskForm):
    base_url = StringField("Store base URL", validators=[DataRequired(), Length(max=2048),
                                                         URL(require_tld=False, message="an http(s) URL")],
                           render_kw={"placeholder": "https://shop.example.com/"})
    consumer_key = StringField("Consumer key", validators=[DataRequired(), credential])
    consumer_secret = PasswordField("Consumer secret", validators=[DataRequired(), credential])
    access_token = PasswordField("Access token", validators=[DataRequired(), credential])
    access_token_secret = PasswordField("Access token secret", validators=[DataRequired(), credential])
    submit = SubmitField("Test and link")
