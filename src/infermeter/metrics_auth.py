"""Optional authentication of /metrics, in the forms Prometheus scrape configs send.

Secrets come from files (Kubernetes Secrets mounted as files), never from flags, so they
do not show in `ps` or in the pod spec. Comparisons are constant-time.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from infermeter.settings import Settings


@dataclass(frozen=True, slots=True)
class MetricsAuth:
    basic: tuple[str, str] | None
    bearer: str | None

    def allows(self, authorization: str) -> bool:
        scheme, _, value = authorization.partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer" and self.bearer is not None:
            return hmac.compare_digest(value.strip().encode(), self.bearer.encode())
        if scheme == "basic" and self.basic is not None:
            try:
                decoded = base64.b64decode(value.strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                return False
            user, _, password = decoded.partition(":")
            expected_user, expected_password = self.basic
            return hmac.compare_digest(user.encode(), expected_user.encode()) & hmac.compare_digest(
                password.encode(), expected_password.encode()
            )
        return False


def _secret(path: object) -> str:
    with open(str(path), encoding="utf-8") as handle:
        return handle.read().strip()


def metrics_auth(settings: Settings) -> MetricsAuth | None:
    basic = None
    if settings.metrics_basic_auth_username and settings.metrics_basic_auth_password_file:
        basic = (
            settings.metrics_basic_auth_username,
            _secret(settings.metrics_basic_auth_password_file),
        )
    bearer = (
        _secret(settings.metrics_bearer_token_file) if settings.metrics_bearer_token_file else None
    )
    return MetricsAuth(basic, bearer) if basic or bearer else None


class RequireAuth:
    """Wraps the /metrics app: 401 with a Basic challenge unless credentials match."""

    def __init__(self, app: ASGIApp, auth: MetricsAuth) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        header = ""
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                header = value.decode("latin-1")
        if self.auth.allows(header):
            await self.app(scope, receive, send)
            return
        challenge = b'Basic realm="infermeter"' if self.auth.basic else b'Bearer realm="infermeter"'
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [(b"www-authenticate", challenge), (b"content-type", b"text/plain")],
            }
        )
        await send({"type": "http.response.body", "body": b"unauthorized\n"})
