"""Errors of the quota service; each maps to one HTTP status through ``http_status``."""

from __future__ import annotations

from workflow_compiler.errors import NbscaleError


class QuotaServiceError(NbscaleError):
    """Base of the errors the quota service answers with (never a refusal: that is a 409 body)."""


class LeaseNotFound(QuotaServiceError):
    """No such lease for this caller (another user's lease is reported the same way, on purpose)."""

    http_status = 404


class LeaseGone(QuotaServiceError):
    """The lease was released or has expired; a heartbeat cannot bring it back."""

    http_status = 410


class RequestIdConflict(QuotaServiceError):
    """A request id was reused with different parameters."""

    http_status = 409


class Forbidden(QuotaServiceError):
    """The caller lacks the scope, or is a service where a user is required."""

    http_status = 403


class UserNotFound(QuotaServiceError):
    """The hub has no such user."""

    http_status = 404


class DatabaseConnectionLost(QuotaServiceError):
    """The quota database ended the connection of a write transaction before its commit: nothing of
    it was saved (the group commit runs it again once, on a new connection, before saying so)."""

    http_status = 503


class CommitOutcomeUnknown(QuotaServiceError):
    """The quota database ended the connection while a write transaction was committing: whether it
    was saved is unknown until the caller asks again (every call of the service is idempotent)."""

    http_status = 503
