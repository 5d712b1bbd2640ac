"""What can go wrong talking to a Magento store, as exception types a caller can act on.

Every message is written for the person who has to fix it (usually the store admin) and
never contains a credential.
"""

from __future__ import annotations

import re
from typing import Any


class MagentoError(Exception):
    """Base class. ``hint`` says what to do about it."""

    hint = ""

    def __init__(self, message: str, *, hint: str | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        if hint is not None:
            self.hint = hint

    def __str__(self) -> str:
        return self.message


# --- reaching the store ---------------------------------------------------------------

class UnsafeStoreURL(MagentoError):
    """The store URL is not one we are willing to connect to."""

    hint = "Use the store's public http(s) address, or add its host to INTEGRATION_ALLOWED_STORE_HOSTS."


class StoreUnreachable(MagentoError):
    hint = "Check that the store is online, its address resolves and its TLS certificate is valid."


class StoreTimeout(StoreUnreachable):
    hint = "The store took too long to answer. Try again; if it keeps happening, check the store's load."


class BadStoreResponse(MagentoError):
    """The store answered, but not with what Magento sends."""

    hint = "Check that the store URL points at Magento 2 and not at a proxy or error page."


class UnsafePath(ValueError):
    """A REST path we refuse to send: a ``.`` or ``..`` segment would take the call out of the
    REST API. Not a ``MagentoError``: nothing reached the store, the link is fine."""

class AnswerTooLarge(BadStoreResponse):
    """The answer is larger than we are willing to read into memory."""

    hint = "Ask for less at a time: a smaller page size (searchCriteria[pageSize]) or narrower filters."


# --- OAuth token endpoints (oauth_problem=...) ----------------------------------------

class OAuthProblem(MagentoError):
    """``/oauth/token/*`` refused the request; ``problem`` is Magento's own text."""

    hint = "Click Reauthorize on the integration in Magento's admin and log in again."

    def __init__(self, problem: str, *, status: int | None = None, hint: str | None = None):
        super().__init__(f"Magento refused the token exchange: {problem}", hint=hint, status=status)
        self.problem = problem


class ConsumerExpired(OAuthProblem):
    hint = (
        "Magento only accepts the exchange within 300 seconds after Activate was clicked. "
        "Click Reauthorize on the integration in Magento's admin and complete the login promptly."
    )


class UnknownConsumer(OAuthProblem):
    hint = "The integration no longer exists in Magento (deleted?). Create it again and click Activate."


class InvalidSignature(OAuthProblem):
    hint = "The store computed a different signature. If the store sits behind a proxy, check that it forwards the Host header and X-Forwarded-Proto."


class VerifierRejected(OAuthProblem):
    hint = "This activation was already used or replaced. Click Reauthorize in Magento's admin."


class TokenAlreadyUsed(OAuthProblem):
    hint = "This activation was already completed or superseded. Click Reauthorize in Magento's admin to start again."


class ClockSkew(OAuthProblem):
    hint = "Our clock is ahead of the store's by more than 10 minutes. Check NTP on both servers."


_PROBLEM_TYPES: list[tuple[re.Pattern[str], type[OAuthProblem]]] = [
    (re.compile(r"has expired", re.I), ConsumerExpired),
    (re.compile(r"consumer having the specified key does not exist|Consumer key is not the correct length", re.I), UnknownConsumer),
    (re.compile(r"signature is invalid|signature.*not supported", re.I), InvalidSignature),
    (re.compile(r"not a verifier token|already being used|token does not exist|not associated", re.I), TokenAlreadyUsed),
    (re.compile(r"verifier", re.I), VerifierRejected),
    (re.compile(r"timestamp", re.I), ClockSkew),
]


def oauth_problem(problem: str, status: int | None) -> OAuthProblem:
    """The typed error for an ``oauth_problem`` text."""
    for pattern, cls in _PROBLEM_TYPES:
        if pattern.search(problem):
            return cls(problem, status=status)
    return OAuthProblem(problem, status=status)


# --- REST API (JSON error bodies) -----------------------------------------------------

class ApiError(MagentoError):
    """A REST call answered with an error; ``message`` has Magento's placeholders filled in."""

    def __init__(self, message: str, *, status: int, parameters: Any = None, errors: list[str] | None = None,
                 hint: str | None = None):
        super().__init__(message, status=status, hint=hint)
        self.parameters = parameters
        self.errors = errors or []


class BadRequest(ApiError):
    hint = "Magento rejected the request's content; see its message."


class PageSizeTooLarge(BadRequest):
    """Input limits are on and a search asked for more than the store's maximum page size:
    ``Framework\\Webapi\\Validator\\SearchCriteriaValidator`` throws "Maximum SearchCriteria
    pageSize is %max" (a LocalizedException, so HTTP 400). ``limit`` is the %max it stated."""

    hint = "The store has input limits on (Stores › Configuration › Services › Web API › Input Limits); ask for at most that many records per page."

    def __init__(self, message: str, *, limit: int, **kwargs):
        super().__init__(message, **kwargs)
        self.limit = limit


PAGE_SIZE_REFUSAL = re.compile(r"^Maximum SearchCriteria pageSize is (\d{1,6})\b")


class Unauthorized(ApiError):
    hint = "Reauthorize the integration in Magento's admin, or check its API resource access."


class SignatureRejected(Unauthorized):
    hint = "The store computed a different signature for this request."


class TokenRevoked(Unauthorized):
    hint = "The integration was deleted, reauthorized or its token revoked in Magento. Activate it again."


class NotAuthorized(Unauthorized):
    hint = "Give the integration access to this API resource (System > Integrations > API) and Reauthorize it."


class NotFound(ApiError):
    hint = "Check the path, SKU or id."


class RateLimited(ApiError):
    hint = "The store is throttling requests; slow down."


class ServerError(ApiError):
    hint = "The store failed internally; its exception log has the details."


_PLACEHOLDER = re.compile(r"%(\w+)")


def fill_placeholders(message: str, parameters: Any) -> str:
    """Magento's ``%1`` / ``%fieldName`` placeholders, filled from ``parameters``."""
    if not parameters:
        return message
    if isinstance(parameters, list):
        lookup = {str(i + 1): v for i, v in enumerate(parameters)}
    elif isinstance(parameters, dict):
        lookup = {str(k): v for k, v in parameters.items()}
    else:
        return message
    return _PLACEHOLDER.sub(lambda m: str(lookup.get(m.group(1), m.group(0))), message)
