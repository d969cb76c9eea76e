"""`--web.config.file`: TLS, basic auth and response headers for our endpoint, in the exporter-toolkit format.

Operators reuse the file they already give node_exporter or Prometheus. As with exporter-toolkit,
the file is read again whenever it changes (checked at each request and each new connection), and
so are the certificate, key and CA files it names: a renewed certificate is served on the next
connection, without a restart. A file that turns bad keeps the running settings and logs why.

Relative paths are taken from the web config file's directory, as exporter-toolkit does. Keys of
that format we cannot honour are refused by name rather than ignored: a setting that silently does
nothing is worse than an error at start.
"""

from __future__ import annotations

import os
import re
import ssl
from pathlib import Path
from typing import Annotated, Any

import structlog
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from exporter.config.reader import ConfigError, parse_model, read_text
from exporter.core.redact import REGISTRY, Secrets
from exporter.core.secret import Secret
from exporter.core.watch import Stamp, file_stamp

log = structlog.get_logger("exporter.config.web")

TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
#: exporter-toolkit's client_auth_type values (Go's tls.ClientAuthType) that Python's TLS can honour.
CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
#: Go accepts a client certificate without verifying it under these; OpenSSL through Python cannot.
_UNVERIFIED_CLIENT_AUTH = ("RequestClientCert", "RequireAnyClientCert", "RequireClientCert")
#: The response headers exporter-toolkit lets a file set, with the values it allows (None: any).
HEADERS: dict[str, tuple[str, ...] | None] = {
    "Strict-Transport-Security": None,
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": None,
    "Content-Security-Policy": None,
}
_BCRYPT_HASH = re.compile(r"^\$2[abxy]?\$\d\d\$[./A-Za-z0-9]{53}$")
_HASH_HINT = "generate one with: htpasswd -nBC 10 \"\" | tr -d ':\\n'"
_KEYS_HINT = "tls_server_config, http_server_config, basic_auth_users"


#: exporter-toolkit keys we refuse by name, and what to do instead.
_UNSUPPORTED = {
    "cert": "certificates written inline; put them in files and use cert_file",
    "key": "keys written inline; put the key in a file and use key_file",
    "client_ca": "CAs written inline; put them in a file and use client_ca_file",
    "cipher_suites": "cipher_suites (Go's cipher names); OpenSSL's defaults for TLS 1.2 and 1.3 apply",
    "curve_preferences": "curve_preferences; OpenSSL's defaults apply",
    "client_allowed_sans": "client_allowed_sans; give the allowed clients certificates from a CA of their own instead",
    "rate_limit": "rate_limit; put a reverse proxy in front if the endpoint needs one",
}


def _refuse(value: Any, info: ValidationInfo) -> Any:
    if value is not None:
        assert info.field_name is not None  # a field validator's
        raise ValueError(f"not supported by inference-exporter: {_UNSUPPORTED[info.field_name]}")
    return value


def _bcrypt_hash(value: Secret) -> Secret:
    if not _BCRYPT_HASH.match(value.reveal()):  # the value is a password's hash: never shown
        raise ValueError(f"expected a bcrypt hash ($2y$10$ and 53 more characters); {_HASH_HINT}")
    return value


#: A password's bcrypt hash: a Secret (a hash can be cracked offline), revealed only to check a password.
BcryptHash = Annotated[Secret, AfterValidator(_bcrypt_hash)]


def _header_name(name: str) -> str:
    if name not in HEADERS:
        raise ValueError(f"HTTP header {name!r} can not be configured; expected one of: {', '.join(HEADERS)}")
    return name


HeaderName = Annotated[str, AfterValidator(_header_name)]


class TLSServerConfig(BaseModel):
    """`tls_server_config`: the server's certificate and what it asks of clients."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cert_file: Path | None = None
    key_file: Path | None = None
    client_ca_file: Path | None = None
    client_auth_type: str = "NoClientCert"
    min_version: str = "TLS12"
    max_version: str = "TLS13"
    prefer_server_cipher_suites: bool = True
    # exporter-toolkit keys refused by name (see _UNSUPPORTED).
    cert: Any = Field(default=None, repr=False)
    key: Any = Field(default=None, repr=False)
    client_ca: Any = None
    cipher_suites: Any = None
    curve_preferences: Any = None
    client_allowed_sans: Any = None

    refuse_unsupported = field_validator(
        "cert", "key", "client_ca", "cipher_suites", "curve_preferences", "client_allowed_sans"
    )(classmethod(lambda cls, value, info: _refuse(value, info)))

    @field_validator("cert_file", "key_file", "client_ca_file")
    @classmethod
    def _from_config_dir(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None:
            return None
        base = (info.context or {}).get("base")
        path = value if value.is_absolute() or base is None else Path(base) / value
        if not path.is_file():
            raise ValueError(f"file {str(path)!r} does not exist or is not a regular file")
        return path

    @field_validator("client_auth_type")
    @classmethod
    def _known_client_auth(cls, value: str) -> str:
        if value in _UNVERIFIED_CLIENT_AUTH:
            raise ValueError(
                f"{value} is not supported: Python's TLS cannot accept a client certificate without verifying it; "
                "use RequireAndVerifyClientCert (or VerifyClientCertIfGiven) with client_ca_file"
            )
        if value not in CLIENT_AUTH:
            raise ValueError(f"expected one of: {', '.join(CLIENT_AUTH)}, got {value!r}")
        return value

    @field_validator("min_version", "max_version")
    @classmethod
    def _known_version(cls, value: str) -> str:
        if value not in TLS_VERSIONS:
            raise ValueError(f"expected one of: {', '.join(TLS_VERSIONS)}, got {value!r}")
        return value

    @property
    def enabled(self) -> bool:
        """TLS is on when any of its keys is set, as in exporter-toolkit."""
        return bool(
            self.cert_file or self.key_file or self.client_ca_file or "client_auth_type" in self.model_fields_set
        )

    @property
    def files(self) -> tuple[Path, ...]:
        return tuple(path for path in (self.cert_file, self.key_file, self.client_ca_file) if path is not None)

    @model_validator(mode="after")
    def _consistent(self) -> TLSServerConfig:
        if not self.enabled:
            return self
        missing = [key for key in ("cert_file", "key_file") if getattr(self, key) is None]
        if missing:
            raise ValueError(f"missing {' and '.join(missing)}: TLS needs the server's certificate and its key")
        if self.client_ca_file is not None and self.client_auth_type == "NoClientCert":
            raise ValueError(
                "client_ca_file is set but client_auth_type is NoClientCert; "
                "set client_auth_type: RequireAndVerifyClientCert to require client certificates"
            )
        if self.client_ca_file is None and CLIENT_AUTH[self.client_auth_type] != ssl.CERT_NONE:
            raise ValueError(
                f"client_auth_type {self.client_auth_type} needs client_ca_file, the CA that signs client certificates"
            )
        if TLS_VERSIONS[self.min_version] > TLS_VERSIONS[self.max_version]:
            raise ValueError(f"min_version {self.min_version} is above max_version {self.max_version}")
        server_context(self)  # a certificate that does not load, or a key that does not match, is an error now
        return self


class HTTPServerConfig(BaseModel):
    """`http_server_config`: extra headers on every response."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Accepted for compatibility and ignored: aiohttp serves HTTP/1.1, which every Prometheus speaks.
    http2: bool = True
    headers: dict[HeaderName, str] = Field(default_factory=dict)

    @field_validator("headers", mode="before")
    @classmethod
    def _empty_headers(cls, value: Any) -> Any:
        return {} if value is None else value

    @field_validator("headers")
    @classmethod
    def _allowed_headers(cls, headers: dict[str, str]) -> dict[str, str]:
        for name, value in headers.items():
            allowed = HEADERS[name]
            if value and allowed is not None and value not in allowed:
                raise ValueError(f"{name}: expected one of: {', '.join(allowed)}, got {value!r}")
        return {name: value for name, value in headers.items() if value}  # blank means unset


class WebConfig(BaseModel):
    """The whole web config file. Empty means plain HTTP with no authentication."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tls_server_config: TLSServerConfig | None = None
    http_server_config: HTTPServerConfig = HTTPServerConfig()
    #: User name -> bcrypt hash. Empty: no authentication.
    basic_auth_users: dict[str, BcryptHash] = Field(default_factory=dict)
    rate_limit: Any = None

    refuse_unsupported = field_validator("rate_limit")(classmethod(lambda cls, value, info: _refuse(value, info)))

    @field_validator("basic_auth_users", "http_server_config", mode="before")
    @classmethod
    def _empty_section(cls, value: Any, info: ValidationInfo) -> Any:
        return ({} if info.field_name == "basic_auth_users" else HTTPServerConfig()) if value is None else value

    @property
    def tls(self) -> TLSServerConfig | None:
        """The TLS settings if TLS is on."""
        return self.tls_server_config if self.tls_server_config is not None and self.tls_server_config.enabled else None

    @property
    def headers(self) -> dict[str, str]:
        return self.http_server_config.headers


def load_web_config(path: str | os.PathLike[str]) -> WebConfig:
    """Read and validate a web config file. Raises ConfigError, naming file:line, on any problem."""
    filename = os.fspath(path)
    text = read_text(filename, "web config file")
    return parse_model(text, filename, WebConfig, keys_hint=_KEYS_HINT, context={"base": Path(filename).parent})


def server_context(tls: TLSServerConfig) -> ssl.SSLContext:
    """A server SSLContext from the files as they are now; ValueError naming them if they do not load."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = TLS_VERSIONS[tls.min_version]
    context.maximum_version = TLS_VERSIONS[tls.max_version]
    if tls.prefer_server_cipher_suites:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    try:
        context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(
            f"cannot load cert_file {str(tls.cert_file)!r} with key_file {str(tls.key_file)!r}: {exc.strerror or exc} "
            "(both PEM, the key the certificate's own?)"
        ) from None
    if tls.client_ca_file is not None:
        try:
            context.load_verify_locations(cafile=str(tls.client_ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"cannot load client_ca_file {str(tls.client_ca_file)!r}: {exc.strerror or exc}") from None
    context.verify_mode = CLIENT_AUTH[tls.client_auth_type]
    return context


class WebSecurity:
    """The web config as it is now: read again when the file, or a TLS file it names, has changed."""

    def __init__(self, path: Path):
        self.path = path
        stamp = file_stamp(path)
        self.config = load_web_config(path)  # ConfigError: the daemon does not start
        #: Its hashes, scrubbed from the log and pages like a target's secrets.
        self._secrets = REGISTRY.add(Secrets(self.config))
        self._stamps, self._context = self._tls_state(stamp, self.config)

    @property
    def tls(self) -> bool:
        return self._context is not None

    def current(self) -> WebConfig:
        """The config to apply to this request (cheap: a stat of each file)."""
        stamps = self._file_stamps()
        if stamps != self._stamps:
            self._stamps = stamps  # a bad file is reported once, then again only when it changes
            self._reload(stamps[0])
        return self.config

    def context(self) -> ssl.SSLContext:
        """The SSLContext for a new connection, with the certificate as it is on disk now."""
        self.current()
        assert self._context is not None
        return self._context

    def server_ssl(self) -> ssl.SSLContext | None:
        """What to hand the server: a context that wraps each new connection with `context()`."""
        return _CurrentContext(self) if self._context is not None else None

    def _file_stamps(self) -> tuple[Stamp | None, ...]:
        tls = self.config.tls
        return (file_stamp(self.path), *(file_stamp(path) for path in (tls.files if tls else ())))

    def _tls_state(
        self, stamp: Stamp | None, config: WebConfig
    ) -> tuple[tuple[Stamp | None, ...], ssl.SSLContext | None]:
        """The stamps to compare against later, taken before the files are read, and the context from them."""
        tls = config.tls
        stamps = (stamp, *(file_stamp(path) for path in (tls.files if tls else ())))
        return stamps, server_context(tls) if tls else None

    def _reload(self, stamp: Stamp | None) -> None:
        try:
            config = load_web_config(self.path)
            stamps, context = self._tls_state(stamp, config)
        except ConfigError as exc:
            log.error("web config reload failed, keeping the running one", errors=[str(issue) for issue in exc.issues])
            return
        except ValueError as exc:
            log.error("web config reload failed, keeping the running one", file=str(self.path), error=str(exc))
            return
        if (context is None) != (self._context is None):
            log.error(
                "the web config turns TLS on or off, which takes a restart; keeping the running web config",
                file=str(self.path),
                tls_now=self._context is not None,
            )
            return
        changed = config != self.config
        self.config, self._stamps, self._context = config, stamps, context
        REGISTRY.discard(self._secrets)
        self._secrets = REGISTRY.add(Secrets(config))
        log.info(
            "web config reloaded" if changed else "TLS files reloaded", file=str(self.path), tls=context is not None
        )


class _CurrentContext(ssl.SSLContext):
    """Given to the server once; wraps each new connection with the web config's current context.

    asyncio wraps every accepted connection through `wrap_bio` of the context it was given, so
    delegating there serves a replaced certificate (or CA, or version limits) from the next
    connection on, with no rebind and no dropped connections.
    """

    security: WebSecurity

    def __new__(cls, security: WebSecurity) -> _CurrentContext:
        context = super().__new__(cls, ssl.PROTOCOL_TLS_SERVER)
        context.security = security
        return context

    def wrap_bio(self, incoming, outgoing, server_side=False, server_hostname=None, session=None):
        return self.security.context().wrap_bio(
            incoming, outgoing, server_side=server_side, server_hostname=server_hostname, session=session
        )
