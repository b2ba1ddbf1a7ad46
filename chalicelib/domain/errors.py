"""Domain errors.

Each error carries a stable machine-readable ``code``. The API maps error *classes* to HTTP statuses in one place
(``chalicelib/api/errors.py``); the state machines match on the class name, which the Lambda runtime (and the local
bridge) reports as ``errorType``. Nothing ever matches on message text.
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """Base of every error the domain raises on purpose."""

    code = "domain_error"

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class InvalidInput(DomainError):
    """Input failed validation; ``details`` names the fields."""

    code = "invalid_input"


class FieldError(InvalidInput, ValueError):
    """Invalid library input (sampling, estimation, ...): ``field`` names the input, the message states the rule.

    The message is ``"<field>: <message>"``; with ``prefix_always = False`` a message that already starts with the
    field's name (a sentence such as "budget must be a positive integer ...") is kept as it is."""

    prefix_always = True

    def __init__(self, field: str, message: str) -> None:
        named = not self.prefix_always and message.startswith(field)
        super().__init__(message if named else f"{field}: {message}", details={"field": field})
        self.field = field


class NotFound(DomainError):
    code = "not_found"


class Conflict(DomainError):
    """The request contradicts what is already durable (e.g. a second, different verdict)."""

    code = "conflict"


class IdempotencyConflict(Conflict):
    """The same idempotency key was used earlier with different arguments."""

    code = "idempotency_conflict"


class InsufficientFunds(Conflict):
    """A reservation would overdraw the programme's available budget."""

    code = "insufficient_funds"


class InvalidState(Conflict):
    """The operation is not allowed in the object's current state (e.g. capture after release)."""

    code = "invalid_state"


class CurrencyMismatch(InvalidInput):
    code = "currency_mismatch"


class NoPersonaAvailable(DomainError):
    """Every persona is cooling down, capped for the week or retired."""

    code = "no_persona_available"


class TransientError(DomainError):
    """A retryable failure of a dependency (the state machines retry on this name)."""

    code = "transient"


class MarketplaceUnavailable(TransientError):
    code = "marketplace_unavailable"


class OrderRefused(DomainError):
    """The seller refused or cancelled the order (a sign the persona may be spotted)."""

    code = "order_refused"
