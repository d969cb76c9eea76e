"""`type: http`: scrape a Prometheus text or OpenMetrics endpoint, as Prometheus itself would."""

from __future__ import annotations

import asyncio
import base64
import re
import ssl
from pathlib import Path
from typing import Annotated, Literal

import aiohttp
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainValidator, field_validator, model_validator
from pydantic_core import PydanticCustomError
from yarl import URL

from exporter import __version__
from exporter.core import compression
from exporter.core.fields import ByteSize, ReadableFile
from exporter.core.redact import redact_url
from exporter.core.secret import Secret, SecretFile, SecretURL
from exporter.format.escaping import ACCEPT, BodyFormat, body_format, shown_content_type
from exporter.sources.base import Exposition, Payload, Shared, SourceError, TargetConfig

USER_AGENT = f"inference-exporter/{__version__}"
#: How much of the raw body a snapshot keeps for debugging views.
RAW_KEEP = 64 * 1024
#: The start of a sample line: anything but a comment or a blank ...
_SAMPLE_START = re.compile(rb"[^#\s]")
#: ... and of every sample line after the first. (`^` with re.M instead tries every position of the
#: body, several times slower: docs/performance.md.)
_SAMPLE_LINE = re.compile(rb"\n[^#\s]")
#: How long an error response's body is waited for (it is only shown, never needed).
ERROR_BODY_WAIT = 0.5
#: Request headers whose values are credentials: Authorization, Cookie, X-Api-Key, X-Auth-Token... A header's
#: name is the only thing that can say so (its value is any string), so this is the one list of words left:
#: the schema makes such a header's value a Secret when the config is loaded (`Headers`), and everything
#: else follows from that type (exporter.core.secret).
SECRET_HEADER_WORDS = ("auth", "cookie", "key", "token", "secret", "password", "credential", "session")


def _header_value(value: object) -> str | Secret:
    if isinstance(value, (str, Secret)):
        return value
    raise PydanticCustomError("string_type", "Input should be a valid string")


def _secret_headers(headers: dict[str, str | Secret]) -> dict[str, str | Secret]:
    """The values of headers whose name says they are credentials, made Secrets."""
    return {
        name: Secret(value) if isinstance(value, str) and is_secret_header(name) else value
        for name, value in headers.items()
    }


def is_secret_header(name: str) -> bool:
    return any(word in name.lower() for word in SECRET_HEADER_WORDS)


#: A request header's value: a Secret where the header's name says it is a credential, else text.
HeaderValue = Annotated[str | Secret, PlainValidator(_header_value)]
#: Request headers, as the config gives them; the credentials among them are Secrets.
Headers = Annotated[dict[str, HeaderValue], AfterValidator(_secret_headers)]


class BasicAuth(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    username: str
    password: Secret | None = None
    password_file: SecretFile | None = None

    @model_validator(mode="after")
    def _one_password(self) -> BasicAuth:
        if (self.password is None) == (self.password_file is None):
            raise ValueError("set exactly one of password or password_file")
        return self


class TLSConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ca_file: ReadableFile | None = None
    cert_file: ReadableFile | None = None
    key_file: SecretFile | None = None
    server_name: str | None = None
    insecure_skip_verify: bool = False

    @model_validator(mode="after")
    def _cert_and_key(self) -> TLSConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together: set both or neither")
        self.context()  # a file that is not PEM is a config error, reported with its line
        return self

    @property
    def files(self) -> tuple[Path, ...]:
        key = self.key_file.path if self.key_file is not None else None
        return tuple(path for path in (self.ca_file, self.cert_file, key) if path is not None)

    def context(self) -> ssl.SSLContext:
        """A client SSLContext from these files; ValueError naming the files if they cannot be loaded."""
        try:
            context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
            if self.cert_file and self.key_file:
                context.load_cert_chain(str(self.cert_file), str(self.key_file))
        except (OSError, ssl.SSLError) as exc:
            names = ", ".join(str(path) for path in self.files)
            raise ValueError(f"cannot load the TLS files ({names}): {exc.strerror or exc}") from None
        if self.insecure_skip_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


class HTTPTarget(TargetConfig):
    type: Literal["http"]
    #: Shown (pages, errors, the log) with `<secret>` for a password in it; revealed only for the request.
    url: SecretURL
    headers: Headers = Field(default_factory=dict)
    basic_auth: BasicAuth | None = None
    bearer_token: Secret | None = None
    bearer_token_file: SecretFile | None = None
    tls: TLSConfig | None = None
    body_size_limit: ByteSize = Field(default=16 * 1024 * 1024, gt=0, le=2**63 - 1)
    #: Most samples one poll may return; 0 means no limit (as in Prometheus).
    sample_limit: int = Field(default=0, ge=0, le=2**63 - 1)
    #: Most labels on one series, longest label name, longest label value; 0 means no limit (as in Prometheus).
    label_limit: int = Field(default=0, ge=0, le=2**31)
    label_name_length_limit: int = Field(default=0, ge=0, le=2**31)
    label_value_length_limit: int = Field(default=0, ge=0, le=2**31)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: SecretURL) -> SecretURL:
        url = URL(value.reveal())
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"expected an http:// or https:// URL with a host, got {str(value)!r}")
        return value

    @model_validator(mode="after")
    def _one_credential(self) -> HTTPTarget:
        given = [k for k in ("basic_auth", "bearer_token", "bearer_token_file") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"set at most one of basic_auth, bearer_token, bearer_token_file (got {', '.join(given)})")
        if any(key.lower() == "authorization" for key in self.headers) and given:
            raise ValueError("an Authorization header and basic_auth/bearer_token cannot be combined")
        return self


def _session() -> aiohttp.ClientSession:
    # No total timeout here: the scheduler bounds each attempt. Proxies from the environment are
    # ignored, as Prometheus does by default: targets are local and must not detour. No cookie jar:
    # a Set-Cookie from one upstream must not be kept, nor sent to another target on the same host
    # (cookies do not tell ports apart); headers configured as `Cookie` are sent as configured. The
    # jar also cost every request a lookup and every response a parse.
    compression.use_in_aiohttp()  # gzip bodies inflated by zlib-ng where it is installed
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=None, connect=None),
        connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=60),
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,
        auto_decompress=True,
    )


class HTTPSource:
    """Scrapes one endpoint through the daemon's one shared aiohttp session."""

    def __init__(self, target: HTTPTarget, shared: Shared):
        self.target = target
        self._shared = shared
        self._tls: tuple[tuple[float, ...], ssl.SSLContext] | None = None
        limits = (target.label_limit, target.label_name_length_limit, target.label_value_length_limit)
        self._label_limits = limits if any(limits) else None
        self._headers = {"Accept": ACCEPT, "Accept-Encoding": "gzip", "User-Agent": USER_AGENT}
        for name, value in target.headers.items():  # sent as configured: here is where they are meant to go
            self._headers[name] = value.reveal() if isinstance(value, Secret) else value
        #: The last Content-Type the target answered with, and what it says (it rarely changes).
        self._content_type: tuple[str | None, BodyFormat, str] = (None, body_format(None), shown_content_type(None))

    def _request_headers(self) -> dict[str, str]:
        """Headers for one request; credential files are read each time, so rotated secrets are used."""
        token = self.target.bearer_token
        if self.target.bearer_token_file is not None:
            token = self.target.bearer_token_file.read()
        if token is not None:
            return {**self._headers, "Authorization": f"Bearer {token.reveal()}"}
        auth = self.target.basic_auth
        if auth is not None:
            # exactly one of the two is set (BasicAuth checks)
            password = auth.password_file.read() if auth.password_file is not None else auth.password
            assert password is not None
            userpass = base64.b64encode(f"{auth.username}:{password.reveal()}".encode()).decode()
            return {**self._headers, "Authorization": f"Basic {userpass}"}
        return self._headers

    def _ssl(self) -> ssl.SSLContext | bool:
        """The target's TLS context, built again when one of its files changes (a rotated certificate)."""
        tls = self.target.tls
        if tls is None:
            return True
        stamps = tuple(path.stat().st_mtime for path in tls.files)
        if self._tls is None or self._tls[0] != stamps:
            self._tls = (stamps, tls.context())
        return self._tls[1]

    async def poll(self) -> Payload:
        session = self._shared.get("http.session", _session)
        url = str(self.target.url)  # as shown: its password, if any, is <secret> in every message below
        try:
            headers = self._request_headers()
        except OSError as exc:  # a credential file that vanished since the config was loaded
            raise SourceError("credentials", f"cannot read a credential file: {exc}") from None
        try:
            ssl_context = self._ssl()
        except (OSError, ValueError) as exc:
            raise SourceError("tls", f"cannot load the TLS files of {url}: {exc}") from None
        server_name = self.target.tls.server_name if self.target.tls else None
        try:
            async with session.get(
                self.target.url.reveal(), headers=headers, ssl=ssl_context, server_hostname=server_name
            ) as response:
                if not 200 <= response.status < 300:
                    raise SourceError(
                        "http_status",
                        f"{url} answered HTTP {response.status} {response.reason or ''}".rstrip(),
                        raw=await _error_body(response),
                    )
                body = await self._read_body(response)
                content_type = response.headers.get("Content-Type")
        except aiohttp.ClientError as exc:
            raise _client_error(url, exc) from None

        if content_type != self._content_type[0]:
            self._content_type = (content_type, body_format(content_type), shown_content_type(content_type))
        _, form, shown = self._content_type
        raw = bytes(body[:RAW_KEEP])
        exposition = Exposition(
            bytes(body),
            form.openmetrics,
            form.escaping,
            url,
            None,  # the pipeline's family filter (exporter.pipeline.target)
            self.target.sample_limit,
            self._label_limits,
            raw,
        )
        # Over the sample_limit before it is parsed: its sample lines counted (a C regex scan, cheap beside a
        # parse) where no allow/deny list makes some of them not count.
        if exposition.sample_limit and not (self.target.allow_families or self.target.deny_families):
            exposition.check_samples(_sample_lines(body) - (not body.endswith(b"\n")))  # a cut-off last line is dropped
        return Payload([], {}, raw, {}, shown, exposition)

    async def _read_body(self, response: aiohttp.ClientResponse) -> bytes:
        limit = self.target.body_size_limit
        if (
            response.content_length is not None
            and response.content_length > limit
            and not response.headers.get("Content-Encoding")
        ):
            raise self._too_large(limit)
        # What aiohttp has buffered, as it comes (its flow control bounds that; a compressed body is
        # inflated a bounded piece at a time): counted against the limit before it is kept. A body that had
        # all arrived by now (a loopback answer's usual case) is one piece, kept as it is: no copy.
        content = response.content
        pieces: list[bytes] = []
        size = 0
        while piece := await content.readany():
            size += len(piece)
            if size > limit:
                del pieces, piece  # not kept alive by the exception's frames
                raise self._too_large(limit)
            pieces.append(piece)
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def _too_large(self, limit: int) -> SourceError:
        # Made where it is raised, never held in a local beforehand: a local holding the exception
        # is a reference cycle through its traceback that kept the whole body alive.
        return SourceError(
            "body_too_large", f"{self.target.url} sent more than the body_size_limit of {limit} bytes", retryable=False
        )

    async def close(self) -> None:
        """The session is shared and closed with the daemon; nothing of this target's to release."""


def _sample_lines(body: bytes) -> int:
    """How many lines of the body start with anything but `#` or a blank."""
    return len(_SAMPLE_LINE.findall(body)) + (_SAMPLE_START.match(body) is not None)


async def _error_body(response: aiohttp.ClientResponse) -> bytes:
    """The start of an error response's body, for the debugging page; never worth waiting long for."""
    try:
        async with asyncio.timeout(ERROR_BODY_WAIT):
            return await response.content.read(RAW_KEEP)
    except (TimeoutError, aiohttp.ClientError):
        return b""


def _client_error(url: str, exc: aiohttp.ClientError) -> SourceError:
    """The reason and words for what aiohttp raised: each says what happened, none is a Python repr."""
    if isinstance(exc, (aiohttp.ClientConnectorCertificateError, aiohttp.ClientSSLError)):
        return SourceError("tls", f"TLS handshake with {url} failed: {exc}")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return SourceError("connect", f"cannot connect to {url}: {exc.os_error.strerror or exc}")
    if isinstance(exc, aiohttp.TooManyRedirects):
        hops = len(exc.history)
        last = exc.history[-1].headers.get("Location", "") if exc.history else ""
        return SourceError(
            "too_many_redirects",
            f"{url} redirected {hops} times without an answer (a redirect loop?), last to {redact_url(last)!r}",
            retryable=False,
        )
    if isinstance(exc, aiohttp.client_exceptions.RedirectClientError):
        return SourceError("bad_redirect", f"{url} redirected to a URL that cannot be followed: {exc}", retryable=False)
    if isinstance(exc, aiohttp.ClientPayloadError):
        if "content length" in str(exc).lower() or "not completed" in str(exc).lower():
            return SourceError(
                "read", f"{url} closed the connection before the end of the body its Content-Length announced"
            )
        return SourceError("read", f"{url} sent a body that cannot be read: {_first_line(exc)}")
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return SourceError("read", f"{url} closed the connection before its answer was complete")
    if isinstance(exc, aiohttp.ClientOSError):
        return SourceError("read", f"{url} broke off the connection: {exc.strerror or _first_line(exc)}")
    if isinstance(exc, aiohttp.ClientResponseError):
        return _invalid_response(url, exc)
    return SourceError("request_failed", f"request to {url} failed: {type(exc).__name__}: {_first_line(exc)}")


#: A line of exposition text: what follows a body that was longer than its Content-Length said.
_EXPOSITION_LINE = re.compile(r"^(#|[a-zA-Z_:][a-zA-Z0-9_:]*[{ ])")
#: The bytes aiohttp's parser quotes in its message: b'...' or b"..."
_QUOTED_BYTES = re.compile(r"""b(['"])(.*?)\1""", re.S)


def _invalid_response(url: str, exc: aiohttp.ClientResponseError) -> SourceError:
    """aiohttp could not read the response as HTTP: a Content-Length shorter than the body (its rest is
    then read where the next response should start), or something that is not an HTTP server."""
    quoted = _QUOTED_BYTES.search(exc.message or "")
    excerpt = quoted.group(2).split("\\n", 1)[0][:60] if quoted else ""  # its first line, as aiohttp escaped it
    if excerpt and _EXPOSITION_LINE.match(excerpt):
        return SourceError(
            "invalid_response",
            f"{url} sent more body than its Content-Length header announced: what follows it ({excerpt!r}) is not an HTTP response",
        )
    what = (exc.message or "").split("\n", 1)[0].rstrip(":") or f"status {exc.status}"
    return SourceError(
        "invalid_response",
        f"{url} answered with something that is not valid HTTP ({what}{': ' + repr(excerpt) if excerpt else ''})",
    )


def _first_line(exc: BaseException) -> str:
    return str(exc).split("\n", 1)[0][:200] or type(exc).__name__
