"""Errors of the control plane's operations, each with the HTTP status the API answers with.

``ControlError`` extends ``edgefn.errors.EdgefnError`` (which has no control-plane class)::

    EdgefnError
    └── ControlError              .status (HTTP), .code (machine-readable)
        ├── NotFound              404: unknown function, version or bundle
        ├── TooLarge              413: a request body over its route's limit
        ├── Conflict              409: the reconciler rejected a deploy or rollback
        ├── Untrusted             403: no registered deployer key of the caller's account signed it
        ├── Unauthorized          401: no token, a malformed, unknown or revoked token
        ├── Forbidden             403: a valid token without the scope, or another account's object
        ├── SecretsUnavailable    503: the control plane was started without a secrets key
        └── StateUnavailable      503: JetStream did not take a write within its retry budget
                                  (e.g. a clustered core that lost its majority); retry later

``extra`` carries machine-readable fields the API adds to the JSON body (``scope``, ``owner``).

Bundle and manifest problems in an upload stay ``BundleError`` / ``ManifestError`` (API: 400).
"""

from __future__ import annotations

from edgefn.errors import EdgefnError

__all__ = [
    "Conflict",
    "ControlError",
    "Forbidden",
    "NotFound",
    "SecretsUnavailable",
    "StateUnavailable",
    "TooLarge",
    "Unauthorized",
    "Untrusted",
]


class ControlError(EdgefnError):
    """A control-plane request failed. ``status`` is the HTTP status, ``code`` a short tag."""

    status = 400
    code = "bad_request"

    def __init__(
        self, message: str, *, hint: str = "", extra: dict[str, str] | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.extra = dict(extra or {})


class NotFound(ControlError):
    status = 404
    code = "not_found"


class TooLarge(ControlError):
    status = 413
    code = "too_large"


class Conflict(ControlError):
    status = 409
    code = "conflict"


class Untrusted(ControlError):
    status = 403
    code = "untrusted_signature"


class Unauthorized(ControlError):
    status = 401
    code = "unauthorized"


class Forbidden(ControlError):
    status = 403
    code = "forbidden"


class SecretsUnavailable(ControlError):
    status = 503
    code = "secrets_unavailable"


class StateUnavailable(ControlError):
    status = 503
    code = "state_unavailable"
