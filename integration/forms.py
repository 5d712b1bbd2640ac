"""Forms shared by more than one blueprint."""

from flask_wtf import FlaskForm
from wtforms import EmailField, HiddenField, PasswordField, StringField, SubmitField
from wtforms.validators import DataRequired, EqualTo, Length, Optional


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)])
    submit = SubmitField("Log in")


class IdentityFields:
    """The two values Magento puts on the identity link, carried through the form."""

    oauth_consumer_key = HiddenField(validators=[DataRequired(), Length(min=32, max=32)])
    success_call_back = HiddenField(validators=[Length(max=2048)])


class IdentityLoginForm(IdentityFields, LoginForm):
    submit = SubmitField("Log in and link store")


class IdentityConfirmForm(IdentityFields, FlaskForm):
    submit = SubmitField("Link store")


class IdentitySwitchForm(IdentityFields, FlaskForm):
    """"Not you?" in the pop-up: log out and start the same linking step again."""


class IdentityRegisterForm(IdentityFields, FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("Password (at least 10 characters)", validators=[DataRequired(), Length(min=10, max=1024)])
    confirm = PasswordField("Repeat password", validators=[DataRequired(), EqualTo("password", "The passwords differ")])
    submit = SubmitField("Create account and link store")


class SecondStepForm(FlaskForm):
    """A code from the authenticator app or a recovery code; or (filled in by passkey.js) a passkey's answer."""
    code = StringField("Code from your authenticator app, or a recovery code",
                       validators=[Optional(), Length(max=32)], render_kw={"autocomplete": "one-time-code",
                                                                             "inputmode": "text"})
    passkey = HiddenField(validators=[Optional(), Length(max=65536)])
    submit = SubmitField("Continue")


class IdentitySecondStepForm(SecondStepForm):
    submit = SubmitField("Continue and link store")


class PasskeySignInForm(FlaskForm):
    passkey = HiddenField(validators=[DataRequired(), Length(max=65536)])
