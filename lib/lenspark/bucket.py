"""Bucket access through boto3: a client from the environment, raw-zone upload, download.

The raw zone contains a dataset's four CSV files at ``s3://<bucket>/raw/<dataset>/``,
where the Spark stages read them as ``s3a://<bucket>/raw/<dataset>``. The command

    python -m lenspark.bucket upload-raw --dataset ml-latest-small --bucket s3://lenspark

downloads and verifies the dataset (or takes ``--movielens-dir``) and uploads it.
``python -m lenspark.bucket download s3://lenspark/reports/<dataset> reports/<dataset>``
copies the trainer's outputs back to a local folder.
The endpoint comes from ``S3_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL``) and the keys
from ``AWS_ACCESS_KEY_ID`` and ``AWS_SECRET_ACCESS_KEY``; none of them is logged.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import boto3
import botocore.config
import botocore.exceptions
from botocore.client import BaseClient

from lenspark.config import DEFAULT_DATASET, GROUPLENS_URL, Config
from lenspark.errors import ConfigError, InputFormatError, LensparkError
from lenspark.logs import configure_logging
from lenspark.storage import is_s3

logger = logging.getLogger(__name__)

RAW_FILES = ("ratings.csv", "movies.csv", "links.csv", "tags.csv")
RAW_ZONE = "raw"
DEFAULT_BUCKET_URI = "s3://lenspark"
DEFAULT_REGION = "us-east-1"
S3_SCHEMES = ("s3", "s3a")

_UNREACHABLE_ERRORS = (
    botocore.exceptions.EndpointConnectionError,
    botocore.exceptions.ConnectTimeoutError,
    botocore.exceptions.ReadTimeoutError,
)


def endpoint_url() -> str | None:
    """Return the S3 endpoint from ``S3_ENDPOINT_URL`` or ``AWS_ENDPOINT_URL``, if either is set."""
    return os.environ.get("S3_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL") or None


def s3_client(
    *, connect_timeout: float = 5.0, read_timeout: float = 60.0, max_attempts: int = 3
) -> BaseClient:
    """Build a boto3 S3 client from the environment.

    Timeouts are in seconds, and ``max_attempts`` counts the first try. A custom
    endpoint (MinIO, moto) gets path-style addressing, because such servers
    rarely resolve ``<bucket>.<host>`` names.
    """
    endpoint = endpoint_url()
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION
    config = botocore.config.Config(
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"max_attempts": max_attempts, "mode": "standard"},
        s3={"addressing_style": "path" if endpoint else "auto"},
    )
    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint, region_name=region, config=config
    )


def parse_bucket_uri(uri: str) -> tuple[str, str]:
    """Split ``s3://bucket/prefix`` (or ``s3a://``) into the bucket and a prefix ending in ``/``."""
    parsed = urlparse(uri)
    if parsed.scheme not in S3_SCHEMES or not parsed.netloc:
        raise ConfigError(
            f"Bucket URI {uri!r} is invalid: expected s3://<bucket> or s3://<bucket>/<prefix>, "
            f"for example {DEFAULT_BUCKET_URI}."
        )
    prefix = parsed.path.strip("/")
    return parsed.netloc, f"{prefix}/" if prefix else ""


def _endpoint_name(client: BaseClient) -> str:
    return client.meta.endpoint_url


@contextmanager
def _bucket_errors(client: BaseClient, bucket: str) -> Iterator[None]:
    """Turn boto3's connection, credential and missing-bucket errors into ConfigError."""
    endpoint = _endpoint_name(client)
    try:
        yield
    except _UNREACHABLE_ERRORS as error:
        raise ConfigError(
            f"The S3 endpoint {endpoint} is unreachable ({error}). Start the bucket server "
            "(`make cluster-up` starts MinIO) or set S3_ENDPOINT_URL to its address."
        ) from error
    except botocore.exceptions.NoCredentialsError as error:
        raise ConfigError(
            f"No S3 credentials were found for {endpoint}. Set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (for the cluster they come from .env, see .env.example)."
        ) from error
    except botocore.exceptions.ClientError as error:
        code = str(error.response.get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchBucket"):
            raise ConfigError(
                f"Bucket {bucket} does not exist at {endpoint}. Create it (`make cluster-up` "
                f"creates it, or `mc mb <alias>/{bucket}`) or pass another --bucket."
            ) from error
        if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            raise ConfigError(
                f"Access to bucket {bucket} at {endpoint} was denied ({code}). Check "
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY against the server's users."
            ) from error
        raise


def check_bucket(client: BaseClient, bucket: str) -> None:
    """Raise ConfigError naming the endpoint and the fix unless ``bucket`` exists and responds."""
    with _bucket_errors(client, bucket):
        client.head_bucket(Bucket=bucket)


def _remote_size(client: BaseClient, bucket: str, key: str) -> int | None:
    try:
        return client.head_object(Bucket=bucket, Key=key)["ContentLength"]
    except botocore.exceptions.ClientError as error:
        if str(error.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey"):
            return None
        raise


def raw_zone_uri(bucket_uri: str, dataset: str) -> str:
    """Return ``s3://<bucket>/<prefix>raw/<dataset>/``, the folder of a dataset's CSV files."""
    bucket, prefix = parse_bucket_uri(bucket_uri)
    return f"s3://{bucket}/{prefix}{RAW_ZONE}/{dataset}/"


def upload_raw(
    folder: str | Path,
    bucket_uri: str = DEFAULT_BUCKET_URI,
    *,
    dataset: str | None = None,
    client: BaseClient | None = None,
    skip_existing: bool = False,
) -> list[str]:
    """Upload a dataset's four CSV files to its raw zone; return the URIs of the objects.

    ``dataset`` defaults to the folder's name. With ``skip_existing``, a file whose
    object already exists with the same size in bytes is not sent again; MovieLens
    releases never change, so the size is enough to tell a finished upload.
    Raises InputFormatError when a CSV file is missing and ConfigError when the
    bucket does not exist or the endpoint is unreachable.
    """
    folder = Path(folder)
    dataset = dataset or folder.name
    bucket, prefix = parse_bucket_uri(bucket_uri)
    missing = [name for name in RAW_FILES if not (folder / name).is_file()]
    if missing:
        raise InputFormatError(
            f"{folder} has no {', '.join(missing)}. A MovieLens folder contains "
            f"{', '.join(RAW_FILES)}; pass the unpacked release folder."
        )

    client = client or s3_client()
    check_bucket(client, bucket)
    uris = []
    with _bucket_errors(client, bucket):
        for name in RAW_FILES:
            path = folder / name
            key = f"{prefix}{RAW_ZONE}/{dataset}/{name}"
            uri = f"s3://{bucket}/{key}"
            size = path.stat().st_size
            if skip_existing and _remote_size(client, bucket, key) == size:
                logger.info("%s already contains %d bytes, skipping the upload", uri, size)
            else:
                logger.info("uploading %s (%d bytes) to %s", path, size, uri)
                client.upload_file(str(path), bucket, key)
            uris.append(uri)
    return uris


def download_prefix(
    uri: str, folder: str | Path, *, client: BaseClient | None = None
) -> list[Path]:
    """Copy every object under ``uri`` (``s3://bucket/prefix``) into ``folder``; return the files.

    Keys keep their path below the prefix. Spark's ``_temporary`` folders are
    skipped, because they contain the parts of unfinished writes.
    """
    bucket, prefix = parse_bucket_uri(uri)
    target = Path(folder).absolute()
    client = client or s3_client()
    check_bucket(client, bucket)
    files = []
    with _bucket_errors(client, bucket):
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for page in pages:
            for item in page.get("Contents", []):
                relative = item["Key"][len(prefix) :]
                parts = Path(relative).parts
                if not relative or relative.endswith("/") or "_temporary" in parts:
                    continue
                if ".." in parts:
                    raise ConfigError(
                        f"Object key {item['Key']!r} in bucket {bucket} leads outside {target}; "
                        "remove or rename that object."
                    )
                path = target / relative
                path.parent.mkdir(parents=True, exist_ok=True)
                client.download_file(bucket, item["Key"], str(path))
                files.append(path)
    logger.info("copied %d files from %s to %s", len(files), uri, target)
    return files


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lenspark.bucket", description="Copy MovieLens data into the bucket."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    upload = commands.add_parser(
        "upload-raw",
        help="download and verify a dataset, then upload its CSV files to the raw zone",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    env = os.environ
    upload.add_argument(
        "--dataset",
        default=env.get("DATASET") or DEFAULT_DATASET,
        help="MovieLens release name (env DATASET)",
    )
    upload.add_argument(
        "--bucket",
        default=env.get("BUCKET_URI") or DEFAULT_BUCKET_URI,
        help="bucket URI whose raw/<dataset>/ receives the CSV files (env BUCKET_URI)",
    )
    upload.add_argument(
        "--data-dir",
        default=env.get("DATA_DIR") or "data",
        help="download cache for the MovieLens zips (env DATA_DIR)",
    )
    upload.add_argument(
        "--base-url",
        default=env.get("MOVIELENS_URL") or GROUPLENS_URL,
        help="where <dataset>.zip and its .md5 are downloaded from (env MOVIELENS_URL)",
    )
    upload.add_argument(
        "--movielens-dir",
        default=None,
        help="an unpacked MovieLens folder to upload instead of downloading",
    )
    upload.add_argument(
        "--force",
        action="store_true",
        help="upload every file even if an object of the same size exists",
    )
    download = commands.add_parser(
        "download", help="copy every object under an s3:// prefix into a local folder"
    )
    download.add_argument("uri", help="s3://<bucket>/<prefix> to copy from")
    download.add_argument("folder", help="local folder to copy into")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; print a LensparkError's message without a traceback, exit 1."""
    configure_logging()
    args = _build_parser().parse_args(argv)
    try:
        if args.command == "download":
            for path in download_prefix(args.uri, args.folder):
                print(path)
            return 0
        config = Config(
            dataset=args.dataset,
            data_dir=args.data_dir,
            base_url=args.base_url,
            movielens_dir=args.movielens_dir,
        )
        # Imported here because the download code is only needed by this command.
        from lenspark.sources import locate_dataset

        folder = locate_dataset(config)
        if is_s3(folder):
            raise ConfigError(
                f"--movielens-dir {folder} is a bucket URI, but upload-raw copies from a local "
                "folder. Pass an unpacked local folder, or omit it to download the dataset."
            )
        uris = upload_raw(folder, args.bucket, dataset=config.dataset, skip_existing=not args.force)
    except LensparkError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for uri in uris:
        print(uri)
    return 0


if __name__ == "__main__":
    sys.exit(main())
