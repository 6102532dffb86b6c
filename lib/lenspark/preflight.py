"""Checks that run before a job starts Spark, so that a bad setting or input fails in seconds.

Each check raises a lenspark error whose message names the setting or file, its value and
the fix. Nothing here starts a JVM, so the job's log shows that message and no Java stack
trace. The checks are:

- the warehouse (and, for stages that write reports, the reports location) can be written:
  a local folder is created if needed and a probe file is written in it; for a bucket, the
  S3 endpoint must respond and the bucket must exist;
- for the ingest stage, the source folder contains the four CSV files, each non-empty, with
  the expected header and, except tags.csv, at least one data line.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import botocore.exceptions

from lenspark import bucket, sources, storage
from lenspark.config import Config
from lenspark.errors import ConfigError, InputFormatError

logger = logging.getLogger(__name__)

# Stages that write files under --reports besides their warehouse tables.
REPORT_STAGES = ("explore", "als")
WAREHOUSE_SETTING = "--warehouse (env WAREHOUSE)"
REPORTS_SETTING = "--reports (env REPORTS)"
SOURCE_SETTING = "--movielens-dir (env MOVIELENS_DIR)"

# The S3 check fails fast: a server that does not accept a connection within
# S3_CONNECT_TIMEOUT_SECONDS is tried S3_MAX_ATTEMPTS times in all.
S3_CONNECT_TIMEOUT_SECONDS = 3.0
S3_READ_TIMEOUT_SECONDS = 10.0
S3_MAX_ATTEMPTS = 2

# The ingest stage's input files, in the order their problems are reported. The names
# match lenspark.ingest.TABLES, which is not imported here because it imports pyspark.
SOURCE_TABLES = ("ratings", "movies", "tags", "links")
# Files that may contain a header and no data lines (lenspark.ingest.MAY_BE_EMPTY).
MAY_HAVE_NO_ROWS = ("tags",)
# Bytes read from the start of each input file to find its header and a first data line.
HEAD_BYTES = 64 * 1024

_UNREACHABLE_ERRORS = (
    botocore.exceptions.EndpointConnectionError,
    botocore.exceptions.ConnectTimeoutError,
    botocore.exceptions.ReadTimeoutError,
)


def run_preflight(config: Config, stage: str) -> None:
    """Check the output locations of ``stage`` and, for ingest, its input files.

    Raises ConfigError for a location that cannot be written or reached, and
    InputFormatError or DataSourceError for a missing or malformed input file.
    """
    check_writable(config.warehouse, WAREHOUSE_SETTING)
    if stage in REPORT_STAGES:
        check_writable(config.reports, REPORTS_SETTING)
    if stage == "ingest":
        check_ingest_source(config)
    logger.info("%s preflight checks passed", stage)


def check_writable(location: str, setting: str) -> None:
    """Raise ConfigError unless files can be written at ``location`` (a folder or bucket URI).

    ``setting`` names the option that set the location, for the message.
    """
    if storage.is_s3(location):
        check_bucket(location, setting)
    else:
        check_local_folder(Path(location), setting)


def check_local_folder(folder: Path, setting: str) -> None:
    """Create ``folder`` if it is missing and write a probe file in it, or raise ConfigError."""
    folder = folder.absolute()
    fix = f"Set {setting} to a folder that you can write, or change the permissions."
    blocking_file = _file_on_path(folder)
    if blocking_file is not None:
        raise ConfigError(
            f"{setting} is {folder}, but {blocking_file} is a file, not a folder, so the "
            f"folder cannot be created. {fix}"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(
            f"{setting} is {folder}, which cannot be created ({error.strerror}). {fix}"
        ) from error
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".lenspark-preflight-"):
            pass
    except OSError as error:
        raise ConfigError(
            f"{setting} is {folder}, which cannot be written ({error.strerror}). {fix}"
        ) from error


def _file_on_path(folder: Path) -> Path | None:
    """Return ``folder`` or its nearest existing ancestor when that is not a folder."""
    for path in (folder, *folder.parents):
        if path.exists():
            return None if path.is_dir() else path
    return None


def check_bucket(uri: str, setting: str) -> None:
    """Raise ConfigError unless the S3 endpoint responds and the bucket of ``uri`` exists.

    NOTE: the check uses S3_ENDPOINT_URL (or AWS_ENDPOINT_URL) and boto3, while Spark
    reads s3a:// through spark.hadoop.fs.s3a.endpoint. When the two settings name
    different servers, this check does not cover Spark's.
    """
    bucket_name, _ = bucket.parse_bucket_uri(uri)
    client = bucket.s3_client(
        connect_timeout=S3_CONNECT_TIMEOUT_SECONDS,
        read_timeout=S3_READ_TIMEOUT_SECONDS,
        max_attempts=S3_MAX_ATTEMPTS,
    )
    endpoint = client.meta.endpoint_url
    try:
        client.head_bucket(Bucket=bucket_name)
    except _UNREACHABLE_ERRORS as error:
        raise ConfigError(_unreachable_message(endpoint, uri, setting)) from error
    except botocore.exceptions.NoCredentialsError as error:
        raise ConfigError(
            f"No S3 credentials were found for {endpoint}, so {setting} {uri} cannot be "
            "checked. Set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (for the cluster they "
            "come from .env, see .env.example)."
        ) from error
    except botocore.exceptions.ClientError as error:
        code = str(error.response.get("Error", {}).get("Code", ""))
        message = _client_error_message(code, bucket_name, endpoint, uri, setting)
        raise ConfigError(message) from error


def _unreachable_message(endpoint: str, uri: str, setting: str) -> str:
    if bucket.endpoint_url():
        where = f"The S3 endpoint {endpoint} (from S3_ENDPOINT_URL)"
        fix = "Start the S3 server (`make cluster-up` starts MinIO) or correct S3_ENDPOINT_URL."
    else:
        where = f"The S3 endpoint {endpoint} (S3_ENDPOINT_URL is not set)"
        fix = "Set S3_ENDPOINT_URL to the address of your S3 server, such as MinIO."
    return (
        f"{where} did not respond within {S3_CONNECT_TIMEOUT_SECONDS:g} s in "
        f"{S3_MAX_ATTEMPTS} attempts, so {setting} {uri} cannot be used. {fix}"
    )


def _client_error_message(
    code: str, bucket_name: str, endpoint: str, uri: str, setting: str
) -> str:
    if code in ("404", "NoSuchBucket"):
        return (
            f"Bucket {bucket_name} of {setting} {uri} does not exist at {endpoint}. Create it "
            f"(`make cluster-up` creates the lenspark bucket, or `mc mb <alias>/{bucket_name}`) "
            f"or set {setting} to an existing bucket."
        )
    if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
        return (
            f"Access to bucket {bucket_name} of {setting} {uri} at {endpoint} was denied "
            f"({code}). Check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY against the server's "
            "users."
        )
    return (
        f"Checking bucket {bucket_name} of {setting} {uri} at {endpoint} failed with S3 error "
        f"{code or 'unknown'}. Check that S3_ENDPOINT_URL names an S3 server."
    )


def check_ingest_source(config: Config) -> str:
    """Find the ingest stage's source folder, check its four CSV files and return its location.

    The folder is found as the ingest stage finds it, so this may download the
    dataset when --movielens-dir is not set and no cached copy exists.
    """
    source = sources.locate_dataset(config)
    if storage.is_s3(source):
        check_bucket(source, SOURCE_SETTING)
    check_source_files(source.rstrip("/"))
    return source


def check_source_files(source: str) -> None:
    """Raise InputFormatError unless ``source`` has the four CSV files with headers and rows."""
    missing = [
        f"{table}.csv" for table in SOURCE_TABLES if not storage.exists(f"{source}/{table}.csv")
    ]
    if missing:
        raise InputFormatError(
            f"{source} has no {', '.join(missing)}. A MovieLens CSV release contains "
            "ratings.csv, movies.csv, tags.csv and links.csv in one folder. Set "
            f"{SOURCE_SETTING} to that folder, or unset it to download the dataset."
        )
    # Imported here because lenspark.ingest imports pyspark, which this module avoids
    # at import time.
    from lenspark.ingest import check_header

    for table in SOURCE_TABLES:
        uri = f"{source}/{table}.csv"
        head = _read_head(uri)
        if not head:
            raise InputFormatError(
                f"{uri} is empty (0 bytes). Replace it with {table}.csv from the MovieLens "
                "release, which starts with its header line."
            )
        check_header(uri, table)
        if table not in MAY_HAVE_NO_ROWS and _has_no_data_line(head):
            raise InputFormatError(
                f"{uri} contains the header line but no data lines. Replace it with the "
                f"complete {table}.csv from the MovieLens release."
            )


def _read_head(uri: str) -> bytes:
    fs, path = storage.filesystem(uri)
    with fs.open_input_stream(path) as stream:
        return stream.read(HEAD_BYTES)


def _has_no_data_line(head: bytes) -> bool:
    """Return whether ``head``, a whole file, has nothing but blank lines after its header.

    Spark's CSV reader (pyspark 4.3) was seen to skip a line whose characters are all
    at most U+0020, the ones Java's String.trim removes, so such a line is blank here
    too. A head of HEAD_BYTES may be the start of a longer file, so it counts as having
    data.
    """
    if len(head) >= HEAD_BYTES:
        return False
    text = head.decode("utf-8", errors="replace")
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")[1:]
    return all(_is_blank(line) for line in lines)


def _is_blank(line: str) -> bool:
    return all(character <= " " for character in line)
