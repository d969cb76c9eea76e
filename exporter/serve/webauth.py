"""Basic auth and response headers from the web config, as aiohttp middleware and a response hook.

bcrypt is slow on purpose (tens of milliseconds at cost 10), and Prometheus sends the same
credentials every scrape, so each (user, hash, password) is checked once and the answer cached,
as exporter-toolkit does. The check runs in one worker thread, off the event loop, one at a
time; concurrent requests with the same credentials wait for the one check in flight.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import os
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor

import structlog
from aiohttp import hdrs, web

from exporter.config.web import WebSecurity
from exporter.core.secret import Secret

log = structlog.get_logger("exporter.serve.webauth")

SECURITY_KEY = web.AppKey("security", WebSecurity)
#: Paths served without basic auth: liveness says only "ok", and probes rarely carry passwords.
OPEN_PATHS = frozenset({"/healthz"})
#: Checked credentials remembered; a full cache forgets the oldest.
CACHE_SIZE = 1024
#: Checked against for unknown users, so that a wrong user name costs as long as a wrong password.
_DECOY_HASH = b"$2b$10$Sn.LFkCpTBPT99G05GUhjeZiF2Vr1jUf5T7LWtjgcHaPybeM6B7.q"


class PasswordCheck:
    """bcrypt paid once per credential: results cached under a keyed digest, never the password itself."""

    def __init__(self, size: int = CACHE_SIZE):
        self.size = size
        self._key = os.urandom(32)
        self._results: OrderedDict[bytes, bool] = OrderedDict()
        self._pending: dict[bytes, asyncio.Future[bool]] = {}
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bcrypt")

    async def check(self, users: Mapping[str, Secret], user: str, password: bytes) -> bool:
        hashed = users.get(user)
        known = hashed is not None
        hashed_bytes = hashed.reveal().encode() if hashed is not None else _DECOY_HASH
        key = hmac.digest(self._key, b"\0".join((user.encode(), hashed_bytes, password)), hashlib.sha256)
        if key in self._results:
            self._results.move_to_end(key)
            return self._results[key]
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = asyncio.ensure_future(self._bcrypt(password, hashed_bytes, known))
            pending.add_done_callback(lambda done: self._remember(key, done))
        return await asyncio.shield(pending)

    async def _bcrypt(self, password: bytes, hashed: bytes, known: bool) -> bool:
        matches = await asyncio.get_running_loop().run_in_executor(self._worker, _checkpw, password, hashed)
        return known and matches

    def _remember(self, key: bytes, done: asyncio.Future[bool]) -> None:
        del self._pending[key]
        if done.cancelled() or done.exception() is not None:
            return
        self._results[key] = done.result()
        while len(self._results) > self.size:
            self._results.popitem(last=False)

    def close(self) -> None:
        self._worker.shutdown(wait=False, cancel_futures=True)


PASSWORDS_KEY = web.AppKey("passwords", PasswordCheck)


def _checkpw(password: bytes, hashed: bytes) -> bool:
    import bcrypt  # here, not at the top: only a web config with basic_auth_users needs it

    try:
        return bcrypt.checkpw(password, hashed)
    except ValueError:  # a password over bcrypt's 72 bytes, or a hash it cannot read
        return False


def secure(app: web.Application, security: WebSecurity) -> None:
    """Put the web config's basic auth and headers on every route of `app`."""
    app[SECURITY_KEY] = security
    app[PASSWORDS_KEY] = passwords = PasswordCheck()
    app.middlewares.append(require_basic_auth)
    app.on_response_prepare.append(add_headers)

    async def close(app: web.Application) -> None:
        passwords.close()

    app.on_cleanup.append(close)


@web.middleware
async def require_basic_auth(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    users = request.app[SECURITY_KEY].current().basic_auth_users
    if users and request.path not in OPEN_PATHS:
        credentials = _credentials(request)
        if credentials is None or not await request.app[PASSWORDS_KEY].check(users, *credentials):
            log.debug("request refused: missing or wrong credentials", path=request.path, remote=request.remote)
            raise web.HTTPUnauthorized(headers={hdrs.WWW_AUTHENTICATE: "Basic"})
    return await handler(request)


def _credentials(request: web.Request) -> tuple[str, bytes] | None:
    """(user, password bytes as sent) from `Authorization: Basic ...`, None if there is none or it is malformed."""
    scheme, _, encoded = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, colon, password = base64.b64decode(encoded.strip(), validate=True).partition(b":")
    except binascii.Error:
        return None
    return (user.decode("utf-8", "replace"), password) if colon else None


async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
    """`http_server_config.headers` on every response, error pages included."""
    for name, value in request.app[SECURITY_KEY].current().headers.items():
        response.headers[name] = value
