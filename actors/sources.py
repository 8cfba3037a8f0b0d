"""Remote audience files (``s3://``, ``gs://``) read through pyarrow's own filesystems.

DuckDB reads remote URLs only through its httpfs extension, which it downloads on first use
(closed networks and private subnets cannot) and which ignores the standard AWS credential
chain. pyarrow's S3 and GCS filesystems ship inside its wheel and use the standard chains
(AWS: env vars, ~/.aws, instance roles; Google: application-default credentials), so the
files are listed and opened here and DuckDB scans the resulting ``pyarrow.dataset``, pushing
its projections and filters into it: a freeze still reads only the ``id`` column.

Endpoint and region variables are passed explicitly, since pyarrow does not read
``AWS_ENDPOINT_URL`` itself (checked with pyarrow 26).
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import re
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from hookcast.actors.errors import AudienceError
from hookcast.actors.redact import redact

REMOTE_SCHEMES = ("s3", "gs", "gcs")
_GLOB = re.compile(r"[*?\[]")
# google-cloud-cpp retries transient errors for 15 minutes by default, so a wrong endpoint
# would hang validation that long; a run that hits a longer outage is resumed instead.
GCS_RETRY_LIMIT = timedelta(seconds=30)
_FRAGMENT_READAHEAD = 2  # row groups read at once by a scan (see _RowGroupDataset)
_SCHEMA_READERS = 16  # footers are read in parallel: a folder of many files on a far store
_REASON_CHARS = 300
_SECRET_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
_CREDENTIAL_ERRORS = re.compile(
    r"ACCESS_DENIED|AccessDenied|InvalidAccessKeyId|SignatureDoesNotMatch|"
    r"PERMISSION_DENIED|UNAUTHENTICATED|credential",
    re.IGNORECASE,
)
_OPEN_PREFIX = re.compile(r"^Could not open Parquet input source '[^']*': ")
_NETWORK_ERRORS = re.compile(r"NETWORK_CONNECTION|UNAVAILABLE|Could not connect|resolve host")


# Where object stores are and how to find credentials, never the credentials themselves:
# the segment actor gets these from the driver (it may run on another node), while keys
# stay with each node's own environment, files or instance role.
LOCATION_VARIABLES = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_PROFILE",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_EC2_METADATA_DISABLED",
    "STORAGE_EMULATOR_HOST",
    "GOOGLE_APPLICATION_CREDENTIALS",
)


def location_env(env: Mapping[str, str]) -> dict[str, str]:
    """The ``LOCATION_VARIABLES`` set in ``env``: what a segment actor elsewhere needs to
    find the same store the driver validated against."""
    return {name: env[name] for name in LOCATION_VARIABLES if env.get(name)}


@dataclass(frozen=True, slots=True)
class RemoteLocation:
    """A parsed ``scheme://bucket/key`` URL; ``key`` may be empty, a folder or a glob."""

    scheme: str  # "s3" or "gs"
    bucket: str
    key: str

    @property
    def path(self) -> str:
        """The location as pyarrow filesystems name it: ``bucket/key``."""
        return f"{self.bucket}/{self.key}".rstrip("/")


@dataclass(frozen=True, slots=True)
class RemoteFiles:
    """The files a remote location names, with the filesystem that reads them."""

    location: RemoteLocation
    filesystem: pafs.FileSystem
    files: tuple[pafs.FileInfo, ...]


def is_remote(location: str) -> bool:
    """Whether ``location`` is an object-store URL read here rather than by DuckDB."""
    scheme, sep, _ = location.partition("://")
    return bool(sep) and scheme.lower() in REMOTE_SCHEMES


def parse_location(key: str, url: str) -> RemoteLocation:
    """Split ``url`` into scheme, bucket and key; ``key`` names the job key in errors.

    Credentials in the URL are refused (and not echoed): they would end up in logs and in
    the ledger; the standard credential chains are the way to give them."""
    scheme, _, rest = url.partition("://")
    bucket, _, object_key = rest.partition("/")
    if "@" in bucket or ":" in bucket:
        raise AudienceError(
            f"{key} {scheme}://***@.../{object_key}: credentials in the URL are not supported; "
            "give them through the environment, ~/.aws, an instance role or Google "
            "application-default credentials."
        )
    if not bucket:
        raise AudienceError(f"{key} {url} names no bucket: use {scheme}://bucket/key.")
    scheme = scheme.lower()
    return RemoteLocation("gs" if scheme == "gcs" else scheme, bucket, object_key.strip("/"))


def _endpoint(url: str, default_scheme: str) -> tuple[str, str]:
    """``(scheme, host[:port])`` from an endpoint URL, with or without its scheme."""
    parts = urlsplit(url if "://" in url else f"{default_scheme}://{url}")
    return parts.scheme.lower(), parts.netloc


def s3_options(env: Mapping[str, str]) -> dict[str, object]:
    """S3FileSystem arguments for the standard endpoint and region variables.

    The service-specific ``AWS_ENDPOINT_URL_S3`` wins over ``AWS_ENDPOINT_URL``, as in the
    AWS SDKs; an ``http://`` endpoint (MinIO, moto) means no TLS. Credentials are never
    passed: the SDK's default chain finds them where the node keeps them."""
    options: dict[str, object] = {}
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if endpoint:
        scheme, host = _endpoint(endpoint, "https")
        options.update(endpoint_override=host, scheme=scheme)
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if region:
        options["region"] = region
    return options


def gcs_options(env: Mapping[str, str]) -> dict[str, object]:
    """GcsFileSystem arguments: the emulator named by ``STORAGE_EMULATOR_HOST`` (plain http,
    no credentials, as Google's own clients treat it), else application-default credentials."""
    options: dict[str, object] = {"retry_time_limit": GCS_RETRY_LIMIT}
    host = env.get("STORAGE_EMULATOR_HOST")
    if host:
        scheme, netloc = _endpoint(host, "http")
        options.update(endpoint_override=netloc, scheme=scheme, anonymous=True)
    return options


def filesystem(location: RemoteLocation, env: Mapping[str, str]) -> pafs.FileSystem:
    """The pyarrow filesystem that reads ``location``."""
    if location.scheme == "gs":
        return pafs.GcsFileSystem(**gcs_options(env))
    options = s3_options(env)
    if "region" not in options and "endpoint_override" not in options:
        # Without a region the SDK guesses one, and a bucket elsewhere answers 301.
        # On failure the SDK's guess stands; a real problem shows when the files are listed.
        with contextlib.suppress(OSError):
            options["region"] = pafs.resolve_s3_region(location.bucket)
    return pafs.S3FileSystem(**options)


def glob_matches(pattern: Sequence[str], parts: Sequence[str]) -> bool:
    """Whether path segments ``parts`` match glob segments ``pattern``, as glob.glob with
    ``recursive=True`` matches: ``*`` stays within a folder, ``**`` spans any number of
    folders, and wildcards skip names starting with a dot."""
    if not pattern:
        return not parts
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return glob_matches(rest, parts) or (
            bool(parts) and not parts[0].startswith(".") and glob_matches(pattern, parts[1:])
        )
    if not parts or not fnmatch.fnmatchcase(parts[0], head):
        return False
    if parts[0].startswith(".") and not head.startswith("."):
        return False
    return glob_matches(rest, parts[1:])


def _relative(info: pafs.FileInfo, base: str) -> list[str]:
    return info.path[len(base) :].strip("/").split("/")


def list_files(fs: pafs.FileSystem, location: RemoteLocation) -> tuple[str, list[pafs.FileInfo]]:
    """What ``location`` is ("glob", "file", "folder" or "missing") and the files it names.

    A folder (a key prefix, or the bucket itself) means every ``*.parquet`` under it, but not
    under names starting with ``.`` or ``_``: Spark and Hive stage unfinished files there."""
    segments = location.key.split("/") if location.key else []
    first_glob = next((i for i, s in enumerate(segments) if _GLOB.search(s)), None)
    if first_glob is not None:
        base = "/".join([location.bucket, *segments[:first_glob]])
        pattern = segments[first_glob:]
        selector = pafs.FileSelector(
            base, recursive=len(pattern) > 1 or "**" in pattern, allow_not_found=True
        )
        found = [
            i
            for i in fs.get_file_info(selector)
            if i.is_file and glob_matches(pattern, _relative(i, base))
        ]
        return "glob", sorted(found, key=lambda i: i.path)
    info = fs.get_file_info(location.path)
    if info.type == pafs.FileType.File:
        return "file", [info]
    if info.type != pafs.FileType.Directory:
        return "missing", []
    found = [
        i
        for i in fs.get_file_info(pafs.FileSelector(location.path, recursive=True))
        if i.is_file
        and i.base_name.endswith(".parquet")
        and not any(p.startswith((".", "_")) for p in _relative(i, location.path))
    ]
    return "folder", sorted(found, key=lambda i: i.path)


def short_reason(exc: BaseException, env: Mapping[str, str]) -> str:
    """The library's message, short, with a hint where the cause is usually the setup, and
    no credential value even if some library echoed one."""
    text = str(exc).strip()
    text = text.splitlines()[0] if text else type(exc).__name__
    text = text.split(" error_info=")[0]  # google-cloud-cpp appends its retry bookkeeping
    text = _OPEN_PREFIX.sub("", text)  # the caller names the file already
    if len(text) > _REASON_CHARS:
        text = text[: _REASON_CHARS - 3] + "..."
    if _CREDENTIAL_ERRORS.search(text):
        text += (
            " (check the credentials: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, ~/.aws or the "
            "node's instance role for s3://; application-default credentials for gs://)"
        )
    elif _NETWORK_ERRORS.search(text):
        text += " (check the endpoint and that this node can reach it)"
    return redact(text, (env.get(name, "") for name in _SECRET_VARIABLES))


def find_files(key: str, url: str, env: Mapping[str, str] | None = None) -> RemoteFiles:
    """The files ``url`` names (a file, a folder prefix or a glob), sorted by path.

    Raises AudienceError naming ``key`` when it names none or cannot be listed."""
    env = os.environ if env is None else env
    location = parse_location(key, url)
    try:
        fs = filesystem(location, env)
        kind, found = list_files(fs, location)
        bucket_missing = not found and fs.get_file_info(location.bucket).type not in (
            pafs.FileType.Directory,
            pafs.FileType.File,
        )
    except OSError as exc:
        raise AudienceError(f"{key} {url} cannot be read: {short_reason(exc, env)}") from exc
    if bucket_missing:
        raise AudienceError(
            f"{key} {url} cannot be read: bucket {location.bucket} does not exist "
            "(or these credentials cannot see it)."
        )
    if kind == "folder" and not found:
        raise AudienceError(
            f"{key} {url} is a folder with no .parquet files in it: point it at a parquet "
            "file, a folder of them, or a glob."
        )
    if not found:
        raise AudienceError(
            f"{key} {url} matches no file: check the bucket, the key or the pattern."
        )
    return RemoteFiles(location, fs, tuple(found))


def open_dataset(key: str, url: str, env: Mapping[str, str] | None = None) -> ds.Dataset:
    """A dataset of every parquet file ``url`` names, for DuckDB to scan.

    Its schema unifies the files' schemas, so a folder whose files differ in columns reads
    like ``read_parquet(..., union_by_name = true)``: missing columns are null and numeric
    types widen. Reading the footers here checks every file before anything is sent, and
    the fragments keep them, so the scans do not read them again. Files whose types cannot
    be unified are named, with both types."""
    env = os.environ if env is None else env
    remote = find_files(key, url, env)
    parquet = ds.ParquetFileFormat()
    fragments = _fragments(remote, parquet)
    schemas = _footer_schemas(key, url, remote, fragments, env)
    try:
        schema = pa.unify_schemas([s for _, s in schemas], promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        detail = first_disagreement(schemas) or short_reason(exc, env)
        raise AudienceError(
            f"{key} {url} cannot be read: its files' columns do not agree: {detail}: "
            "every file must give a column the same type (rewrite the odd files, or leave "
            "them out with a glob)."
        ) from exc
    row_groups = [part for fragment in fragments for part in fragment.split_by_row_group()]
    return _RowGroupDataset(row_groups, schema, parquet, remote.filesystem)


def remote_schemas(
    key: str, url: str, env: Mapping[str, str] | None = None
) -> list[tuple[str, pa.Schema]]:
    """(file name relative to ``url``, footer schema) of every file ``url`` names."""
    env = os.environ if env is None else env
    remote = find_files(key, url, env)
    fragments = _fragments(remote, ds.ParquetFileFormat())
    return _footer_schemas(key, url, remote, fragments, env)


def _fragments(remote: RemoteFiles, parquet: ds.ParquetFileFormat) -> list[ds.FileFragment]:
    return [
        parquet.make_fragment(info.path, remote.filesystem, file_size=info.size)
        for info in remote.files
    ]


def _footer_schemas(
    key: str,
    url: str,
    remote: RemoteFiles,
    fragments: Sequence[ds.FileFragment],
    env: Mapping[str, str],
) -> list[tuple[str, pa.Schema]]:
    base = remote.location.path

    def footer_schema(fragment: ds.FileFragment) -> tuple[str, pa.Schema]:
        name = fragment.path[len(base) :].strip("/") or fragment.path.rsplit("/", 1)[-1]
        try:
            return name, fragment.physical_schema
        except (OSError, pa.ArrowException) as exc:
            full = f"{remote.location.scheme}://{fragment.path}"
            which = "" if fragment.path == base else f"{full}: "
            raise AudienceError(
                f"{key} {url} cannot be read: {which}{short_reason(exc, env)}"
            ) from exc

    with ThreadPoolExecutor(min(_SCHEMA_READERS, len(fragments))) as pool:
        return list(pool.map(footer_schema, fragments))


def first_disagreement(schemas: Sequence[tuple[str, pa.Schema]]) -> str | None:
    """``type_disagreement`` of the first column (in file order) the files disagree on."""
    columns = dict.fromkeys(n for _, schema in schemas for n in schema.names)
    return next(filter(None, (type_disagreement(c, schemas) for c in columns)), None)


def type_disagreement(column: str, schemas: Sequence[tuple[str, pa.Schema]]) -> str | None:
    """How the files disagree on ``column``'s type, naming a file for each type, e.g.
    ``id is int64 in part-0.parquet (7 files) but string in part-7.parquet (1 file)``;
    None when every file that has the column gives it one type."""
    first_file: dict[str, str] = {}
    files: dict[str, int] = {}
    for name, schema in schemas:
        index = schema.get_field_index(column)
        if index < 0:
            continue
        kind = str(schema.field(index).type)
        first_file.setdefault(kind, name)
        files[kind] = files.get(kind, 0) + 1
    if len(files) < 2:
        return None
    # The most common type first: the odd files are the ones to look at.
    kinds = sorted(files, key=lambda k: -files[k])
    shown = [
        f"{kind} in {first_file[kind]} ({files[kind]} file{'s' if files[kind] > 1 else ''})"
        for kind in kinds
    ]
    return f"{column} is {shown[0]} but " + ", ".join(shown[1:])


class _RowGroupDataset(ds.FileSystemDataset):
    """One fragment per row group, and scans that keep few of them in flight.

    A parquet fragment's reader pre-buffers the column chunks of every row group it reads
    and keeps them until the fragment is done, and DuckDB asks for ``scanner(columns=,
    filter=)`` with pyarrow's default of 4 fragments at once: whole files in memory. Row-group
    fragments share their file's footer, so splitting costs no request, and memory stays at a
    couple of row groups (measured: 2.4M contacts from S3, Arrow's peak 650 -> 200 MB)."""

    def scanner(self, *args: object, **kwargs: object) -> ds.Scanner:
        kwargs.setdefault("fragment_readahead", _FRAGMENT_READAHEAD)
        return super().scanner(*args, **kwargs)
