"""Warehouse locations and file access that work the same on a folder and on S3.

Every table lives at ``table_uri(warehouse, dataset, table)``. The warehouse root
is a local folder or a bucket URI; Spark reads a bucket through ``s3a://`` and
Python through pyarrow's ``S3FileSystem``, so both schemes are accepted and
converted here. This module never imports pyspark.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import secrets
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow.fs as pafs

from lenspark.errors import IncompleteTableError

logger = logging.getLogger(__name__)

SUCCESS_MARKER = "_SUCCESS"
S3_SCHEMES = ("s3", "s3a")
# A table folder contains one subfolder per write under VERSIONS_FOLDER and a pointer
# file naming the complete version that readers use. Spark and pyarrow skip names
# that start with "_", so reading the table folder itself finds no rows.
VERSIONS_FOLDER = "_versions"
CURRENT_POINTER = "_CURRENT"
# Versions kept besides the current one, so a reader that resolved the pointer just
# before a newer write still finds its files.
PREVIOUS_VERSIONS_KEPT = 1


def is_s3(uri: str) -> bool:
    """Return whether ``uri`` names an object in a bucket rather than a local path."""
    return urlparse(uri).scheme in S3_SCHEMES


def table_uri(warehouse: str, dataset: str, table: str) -> str:
    """Build the location of one table; the only place table paths are made."""
    root = warehouse.rstrip("/")
    if not is_s3(root):
        root = str(Path(root).absolute())
    return f"{root}/{dataset}/{table}"


def spark_uri(uri: str) -> str:
    """Return ``uri`` in the form Spark's Hadoop file systems read (``s3a://`` for buckets)."""
    parsed = urlparse(uri)
    if parsed.scheme in S3_SCHEMES:
        return "s3a://" + uri.split("://", 1)[1]
    return str(Path(uri).absolute())


def s3_filesystem() -> pafs.S3FileSystem:
    """Build pyarrow's S3 client from the environment.

    pyarrow reads the credentials from ``AWS_ACCESS_KEY_ID`` and
    ``AWS_SECRET_ACCESS_KEY`` but not the endpoint, so ``S3_ENDPOINT_URL`` (or
    ``AWS_ENDPOINT_URL``) is passed here together with its scheme.
    """
    endpoint = os.environ.get("S3_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    if not endpoint:
        return pafs.S3FileSystem(region=region)
    parsed = urlparse(endpoint)
    return pafs.S3FileSystem(
        endpoint_override=parsed.netloc,
        scheme=parsed.scheme or "https",
        region=region,
        allow_bucket_creation=False,
    )


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """Return the pyarrow file system for ``uri`` and the path within it."""
    if is_s3(uri):
        return s3_filesystem(), uri.split("://", 1)[1]
    return pafs.LocalFileSystem(), str(Path(uri).absolute())


def exists(uri: str) -> bool:
    """Return whether a file or folder exists at ``uri``."""
    fs, path = filesystem(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def is_complete(uri: str) -> bool:
    """Return whether the table at ``uri`` carries its ``_SUCCESS`` marker."""
    return exists(f"{uri.rstrip('/')}/{SUCCESS_MARKER}")


def new_version(uri: str) -> str:
    """Return a fresh, empty location for the next write of the table at ``uri``.

    Version names sort by time: a UTC timestamp and a random suffix.
    """
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return f"{uri.rstrip('/')}/{VERSIONS_FOLDER}/{stamp}-{secrets.token_hex(3)}"


def publish_version(uri: str, version_uri: str) -> None:
    """Point the table at ``uri`` to the complete write at ``version_uri``, then prune.

    The pointer is one small file written atomically, so a reader sees the old
    version or the new one. A version without its ``_SUCCESS`` marker is refused.
    """
    if not is_complete(version_uri):
        raise IncompleteTableError(
            f"{version_uri} has no {SUCCESS_MARKER} marker, so it cannot become the current "
            "version; its writer did not finish."
        )
    version = version_uri.rstrip("/").rsplit("/", 1)[1]
    write_text(f"{uri.rstrip('/')}/{CURRENT_POINTER}", version + "\n")
    _prune_versions(uri, keep=version)


def _prune_versions(uri: str, keep: str) -> None:
    fs, path = filesystem(f"{uri.rstrip('/')}/{VERSIONS_FOLDER}")
    selector = pafs.FileSelector(path, allow_not_found=True)
    folders = sorted(
        info.base_name
        for info in fs.get_file_info(selector)
        if info.type == pafs.FileType.Directory
    )
    older = [name for name in folders if name < keep]
    stale = older[: max(len(older) - PREVIOUS_VERSIONS_KEPT, 0)]
    # Versions newer than the one published are other writers' work in progress.
    for name in stale:
        fs.delete_dir(f"{path}/{name}")
        logger.debug("deleted old version %s of %s", name, uri)


def current_version(uri: str) -> str | None:
    """Return the location of the table's current version, or None when there is no pointer."""
    pointer = f"{uri.rstrip('/')}/{CURRENT_POINTER}"
    if not exists(pointer):
        return None
    version = read_text(pointer).strip()
    return f"{uri.rstrip('/')}/{VERSIONS_FOLDER}/{version}"


def require_complete(uri: str, producer: str) -> str:
    """Return the location to read the table at ``uri`` from, or raise IncompleteTableError.

    That is the version its pointer names, when complete; a table written in place
    by another tool is accepted when it has a ``_SUCCESS`` marker. ``producer``
    names the stage that writes the table, for the message's fix.
    """
    version = current_version(uri)
    if version is not None:
        if is_complete(version):
            return version
        problem = f"points to {version}, which has no {SUCCESS_MARKER} marker"
    elif is_complete(uri):
        return uri
    elif exists(uri):
        problem = (
            f"has no complete version (no {CURRENT_POINTER} pointer and no {SUCCESS_MARKER} "
            f"marker), so the {producer} stage that writes it did not finish"
        )
    else:
        problem = "does not exist"
    raise IncompleteTableError(
        f"Table {uri} {problem}. Run the {producer} stage first (make {producer})."
    )


def read_text(uri: str) -> str:
    """Read a whole UTF-8 file."""
    fs, path = filesystem(uri)
    with fs.open_input_stream(path) as stream:
        return stream.read().decode("utf-8")


def write_bytes(uri: str, data: bytes) -> None:
    """Write ``data`` so that readers see the old file or the whole new one, never a part.

    A local file is written to a temporary name in the same folder and renamed.
    An S3 object is written by a single upload, which is atomic.
    """
    if is_s3(uri):
        fs, path = filesystem(uri)
        with fs.open_output_stream(path) as stream:
            stream.write(data)
        return
    target = Path(uri)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        dir=target.parent, prefix=f".{target.name}.", delete=False
    ) as f:
        f.write(data)
        temporary = Path(f.name)
    temporary.replace(target)


def write_text(uri: str, text: str) -> None:
    """Write a UTF-8 text file atomically (see ``write_bytes``)."""
    write_bytes(uri, text.encode("utf-8"))


def write_json(uri: str, value: Any) -> None:
    """Write ``value`` as indented JSON atomically."""
    write_text(uri, json.dumps(value, indent=2, sort_keys=True) + "\n")


def read_json(uri: str) -> Any:
    """Read a JSON file."""
    return json.loads(read_text(uri))


def upload_file(local_path: str | Path, uri: str) -> None:
    """Copy a local file to ``uri`` (a folder path or an S3 URI)."""
    write_bytes(uri, Path(local_path).read_bytes())
