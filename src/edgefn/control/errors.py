"""Errors of the control plane's operations, each with the HTTP status the API answers with.

``ControlError`` extends ``edgefn.errors.EdgefnError`` (which has no control-plane class)::

    EdgefnError
    └── ControlError              .status (HTTP), .code (machine-readable)
        ├── NotFound              404: unknown function, version or bundle
        ├── Conflict              409: the reconciler rejected a deploy or rollback
        ├── Untrusted             403: no trusted key signed the bundle
        └── SecretsUnavailable    503: the control plane was started without a secrets key

Bundle and manifest problems in an upload stay ``BundleError`` / ``ManifestError`` (API: 400).
"""

from __future__ import annotations

from edgefn.errors import EdgefnError

__all__ = ["Conflict", "ControlError", "NotFound", "SecretsUnavailable", "Untrusted"]


class ControlError(EdgefnError):
    """A control-plane request failed. ``status`` is the HTTP status, ``code`` a short tag."""

    status = 400
    code = "bad_request"


class NotFound(ControlError):
    status = 404
    code = "not_found"


class Conflict(ControlError):
    status = 409
    code = "conflict"


class Untrusted(ControlError):
    status = 403
    code = "untrusted_signature"


class SecretsUnavailable(ControlError):
    status = 503
    code = "secrets_unavailable"
