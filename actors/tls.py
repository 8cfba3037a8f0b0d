"""HTTPS trust for one endpoint: the job's PEM files, read once, and the SSL context from them.

The files are read where the job is loaded and travel as text, so a sender on another node
of a cluster needs none of them on its disk. Python's ``ssl`` loads a client certificate
only from files: ``ssl_context`` writes it to a private temporary folder for the moment of
loading.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import httpx


@dataclass(frozen=True, slots=True)
class TlsConfig:
    ca_pem: str | None = None  # trust only these CAs; None: the system's trust store
    client_cert_pem: str | None = field(default=None, repr=False)
    client_key_pem: str | None = field(default=None, repr=False)
    insecure_skip_verify: bool = False


class TlsFileError(ValueError):
    """A TLS file that cannot be used; ``key`` is the job key that names it."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def load_tls(
    base_dir: Path,
    *,
    ca_bundle: str | None,
    client_cert: str | None,
    client_key: str | None,
    insecure_skip_verify: bool,
) -> TlsConfig:
    """Read the job's TLS files (relative to ``base_dir``) and check that an SSL context
    takes them. Raises ``TlsFileError`` naming the key."""
    config = TlsConfig(
        ca_pem=_read(base_dir, "webhook.tls.ca_bundle", ca_bundle),
        client_cert_pem=_read(base_dir, "webhook.tls.client_cert", client_cert),
        client_key_pem=_read(base_dir, "webhook.tls.client_key", client_key),
        insecure_skip_verify=insecure_skip_verify,
    )
    if config.ca_pem is not None:
        try:
            ssl.create_default_context(cadata=config.ca_pem)
        except (ssl.SSLError, ValueError) as exc:
            raise TlsFileError(
                "webhook.tls.ca_bundle",
                f"webhook.tls.ca_bundle {ca_bundle} holds no usable PEM certificate "
                f"({_reason(exc)}): give the CA's certificate, -----BEGIN CERTIFICATE----- ...",
            ) from None
    if config.client_cert_pem is not None:
        try:
            ssl_context(config)
        except ssl.SSLError as exc:
            raise TlsFileError(
                "webhook.tls.client_cert",
                f"webhook.tls.client_cert {client_cert} and client_key {client_key} do not "
                f"load as a certificate and its private key ({_reason(exc)}): give PEM files, "
                "the key unencrypted.",
            ) from None
    return config


def ssl_context(config: TlsConfig | None) -> ssl.SSLContext:
    """The context requests to the endpoint use; without a config, httpx's default
    (certifi, or SSL_CERT_FILE / SSL_CERT_DIR when set)."""
    if config is None:
        return httpx.create_ssl_context()
    if config.insecure_skip_verify:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif config.ca_pem is not None:
        context = ssl.create_default_context(cadata=config.ca_pem)
    else:
        context = httpx.create_ssl_context()
    if config.client_cert_pem is not None and config.client_key_pem is not None:
        with tempfile.TemporaryDirectory(prefix="hookcast-tls-") as folder:
            cert, key = Path(folder, "cert.pem"), Path(folder, "key.pem")
            for path, text in ((cert, config.client_cert_pem), (key, config.client_key_pem)):
                descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(descriptor, "w", encoding="ascii") as handle:
                    handle.write(text)
            context.load_cert_chain(cert, key)
    return context


def _read(base_dir: Path, key: str, location: str | None) -> str | None:
    if location is None:
        return None
    path = base_dir / Path(location).expanduser()
    try:
        return path.read_text(encoding="ascii")
    except FileNotFoundError:
        raise TlsFileError(
            key, f"{key} {location} does not exist (looked at {path}): give a PEM file's path."
        ) from None
    except UnicodeDecodeError:
        raise TlsFileError(
            key, f"{key} {location} is not a PEM text file: convert it (openssl x509 -outform PEM)."
        ) from None
    except OSError as exc:
        raise TlsFileError(key, f"{key} {location} cannot be read: {exc.strerror}.") from None


def _reason(exc: Exception) -> str:
    return getattr(exc, "reason", None) or str(exc) or type(exc).__name__
