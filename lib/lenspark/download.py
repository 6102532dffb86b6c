"""Download, verify and unpack MovieLens release zips from GroupLens or a mirror.

A release is ``<base_url>/<dataset>.zip`` with its checksum at ``<base_url>/<dataset>.zip.md5``.
The zip is written to ``<dataset>.zip.part`` and renamed only after its md5 matches. It is
unpacked into a temporary folder that is renamed at the end. So ``data_dir`` never contains a
partial zip under the final name, or a partial release folder.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import stat
import sys
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import TypeVar

import requests
from tqdm import tqdm

from lenspark import __version__, storage
from lenspark.errors import ConfigError, DataSourceError

logger = logging.getLogger(__name__)

# A release folder contains one of these files: ratings.csv in the CSV releases
# (ml-latest-small, ml-25m, ...), ratings.dat in ml-1m and ml-10m, u.data in ml-100k.
RELEASE_MARKERS = ("ratings.csv", "ratings.dat", "u.data")
CHUNK_BYTES = 1 << 16
MAX_BACKOFF_SECONDS = 60.0
# An md5 file is one short line per file, so a larger response is an error page.
MAX_MD5_FILE_BYTES = 64 * 1024

_MD5_BSD_LINE = re.compile(r"^MD5 \((?P<name>.+)\) = (?P<digest>[0-9a-fA-F]{32})$")
_MD5_GNU_LINE = re.compile(r"^(?P<digest>[0-9a-fA-F]{32})(?:\s+\*?(?P<name>.+))?$")
_CONTENT_RANGE = re.compile(r"^bytes (?P<start>\d+)-(?P<end>\d+)/(?P<total>\d+|\*)$")
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:")

_Result = TypeVar("_Result")


class _TransientError(Exception):
    """A failure that a later attempt may not repeat: HTTP 429 or 5xx, or a short body."""


class _DownloadFailed(Exception):
    """A download failure that is not retried, with its cause for the DataSourceError message."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason


# Errors after which a request is tried again. Connection errors include connect timeouts,
# and a connection lost in the middle of a body surfaces as ChunkedEncodingError.
_RETRYABLE = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    _TransientError,
)


def fetch_dataset(
    dataset: str,
    data_dir: str | Path,
    base_url: str,
    *,
    retries: int = 3,
    timeout: float = 60.0,
    progress: bool = True,
    backoff: float = 1.0,
) -> Path:
    """Find or download a MovieLens release and return its unpacked folder.

    The first of these that exists is used, and only the last one uses the network:
    1. ``<data_dir>/<dataset>/`` already unpacked, with ratings.csv (or, in ml-100k, ml-1m and
       ml-10m, u.data or ratings.dat) inside;
    2. ``<data_dir>/<dataset>.zip``, checked against ``<dataset>.zip.md5`` next to it. A zip
       without that file (one copied by hand) gets only a zip integrity check and a warning;
    3. ``<base_url>/<dataset>.zip``, checked against ``<base_url>/<dataset>.zip.md5``.

    ``retries`` is the number of extra attempts per file after a connection error, a timeout,
    HTTP 429 or 5xx, with ``backoff`` seconds before the first and twice as long before each
    next one (at most 60 s). Other HTTP errors such as 404 fail at once. ``timeout`` is in
    seconds and applies to the connection and to each read, not to the whole download.
    A partial ``<dataset>.zip.part`` from an earlier run is continued with a Range request.

    Raises DataSourceError when the download fails, the md5 does not match, or the zip is
    damaged or contains an entry that would be written outside the release folder.

    NOTE: two processes fetching the same dataset into one ``data_dir`` at once are not
    coordinated, and they can corrupt each other's part file.
    """
    _validate_arguments(dataset, retries)
    data_dir = Path(data_dir)
    target = data_dir / dataset

    unpacked = _find_unpacked(target)
    if unpacked is not None:
        logger.info("Using the unpacked MovieLens release in %s", unpacked)
        return unpacked

    zip_path = data_dir / f"{dataset}.zip"
    if zip_path.is_file():
        _check_cached_zip(zip_path)
        return _unpack(zip_path, target)

    data_dir.mkdir(parents=True, exist_ok=True)
    _download_release(dataset, data_dir, base_url, retries, timeout, progress, backoff)
    return _unpack(zip_path, target)


def parse_md5_file(text: str, zip_name: str, source: str) -> str:
    """Return the lower-case md5 hex digest that ``text`` lists for the file ``zip_name``.

    Accepts the BSD form that GroupLens publishes, ``MD5 (ml-latest-small.zip) = <hex>``, and
    the md5sum form ``<hex>  <name>`` (or a bare ``<hex>``). ``source`` is the URL or path of
    the md5 file, for the error message. Raises DataSourceError when no line matches.
    """
    other_names = []
    for raw_line in text.splitlines():
        line = raw_line.strip()
        match = _MD5_BSD_LINE.match(line) or _MD5_GNU_LINE.match(line)
        if match is None:
            continue
        name = match.group("name")
        if name is None or PurePosixPath(name.strip()).name == zip_name:
            return match.group("digest").lower()
        other_names.append(name.strip())

    if other_names:
        problem = f"gives md5 checksums only for {', '.join(other_names)}, not for {zip_name}"
    else:
        problem = f"contains no md5 checksum (it starts with {text[:60]!r})"
    raise DataSourceError(
        f"The md5 file {source} {problem}. Check that the base URL points to a MovieLens "
        f"mirror, or copy {zip_name} into the data folder by hand."
    )


def _validate_arguments(dataset: str, retries: int) -> None:
    if not dataset or dataset in (".", "..") or "/" in dataset or "\\" in dataset:
        raise ConfigError(
            f"The dataset must be a release name such as ml-latest-small, got {dataset!r}"
        )
    if retries < 0:
        raise ConfigError(f"retries must be 0 or more, got {retries}")


def _has_marker(folder: Path) -> bool:
    return any((folder / marker).is_file() for marker in RELEASE_MARKERS)


def _find_unpacked(target: Path) -> Path | None:
    """Return ``target`` if it is an unpacked release and None if it does not exist.

    Raises DataSourceError if ``target`` exists but is not a folder with a release marker file.
    """
    if not target.exists():
        return None
    if target.is_dir() and _has_marker(target):
        return target
    raise DataSourceError(
        f"{target} exists but is not an unpacked MovieLens release: it contains none of "
        f"{', '.join(RELEASE_MARKERS)}. Delete or rename it so that the release can be "
        f"unpacked there, or set MOVIELENS_DIR to the folder that contains ratings.csv."
    )


def _file_md5(path: Path) -> str:
    # usedforsecurity=False keeps md5 available on FIPS-enabled systems.
    with path.open("rb") as file:
        return hashlib.file_digest(file, lambda: hashlib.md5(usedforsecurity=False)).hexdigest()


def _check_cached_zip(zip_path: Path) -> None:
    """Raise DataSourceError unless ``zip_path`` matches the md5 file next to it, if any.

    A zip without an md5 file is accepted with a warning.
    """
    md5_path = zip_path.with_name(f"{zip_path.name}.md5")
    if not md5_path.is_file():
        logger.warning(
            "%s has no %s next to it, so its md5 was not checked, only its zip structure and CRCs",
            zip_path,
            md5_path.name,
        )
        return

    md5_text = md5_path.read_text(encoding="utf-8", errors="replace")
    expected = parse_md5_file(md5_text, zip_path.name, str(md5_path))
    actual = _file_md5(zip_path)
    if actual != expected:
        raise DataSourceError(
            f"The md5 of {zip_path} is {actual}, but {md5_path} expects {expected}. "
            f"Delete both files so that the next run downloads the release again, "
            f"or replace {zip_path} with an intact copy and delete {md5_path}."
        )
    logger.info("Using the cached %s, md5 verified", zip_path)


# Downloading.


def _download_release(
    dataset: str,
    data_dir: Path,
    base_url: str,
    retries: int,
    timeout: float,
    progress: bool,
    backoff: float,
) -> None:
    """Download ``<dataset>.zip`` and its md5 file into ``data_dir`` and verify the zip."""
    zip_name = f"{dataset}.zip"
    zip_url = f"{base_url.rstrip('/')}/{zip_name}"
    md5_url = f"{zip_url}.md5"
    zip_path = data_dir / zip_name
    part_path = data_dir / f"{zip_name}.part"

    with requests.Session() as session:
        session.headers["User-Agent"] = f"lenspark/{__version__}"
        try:
            # The md5 file comes first: it is small, and a 404 on it fails before a long download.
            md5_text = _with_retries(
                md5_url, lambda: _get_md5_text(session, md5_url, timeout), retries, backoff
            )
            expected = parse_md5_file(md5_text, zip_name, md5_url)

            if part_path.is_file() and _file_md5(part_path) == expected:
                logger.info("%s is already complete, so it is not downloaded again", part_path)
            else:
                _with_retries(
                    zip_url,
                    lambda: _download_part(session, zip_url, part_path, timeout, progress),
                    retries,
                    backoff,
                )
        except _DownloadFailed as error:
            raise _download_error(error.url, error.reason, dataset, data_dir) from error

    actual = _file_md5(part_path)
    if actual != expected:
        part_path.unlink()
        reason = (
            f"its md5 is {actual}, but {md5_url} expects {expected}, "
            f"so the downloaded file {part_path} was deleted"
        )
        raise _download_error(zip_url, reason, dataset, data_dir)

    # The md5 file is written first, so that a zip under its final name always has one.
    storage.write_text(str(zip_path.with_name(f"{zip_name}.md5")), md5_text)
    part_path.replace(zip_path)
    logger.info("Downloaded %s to %s, md5 %s verified", zip_url, zip_path, actual)


def _download_error(url: str, reason: str, dataset: str, data_dir: Path) -> DataSourceError:
    return DataSourceError(
        f"Download of {url} failed: {reason}. To use a copy you already have, set "
        f"MOVIELENS_DIR to the unpacked {dataset} folder, or copy {dataset}.zip into "
        f"{data_dir}/ and run again."
    )


def _with_retries(
    url: str, attempt: Callable[[], _Result], retries: int, backoff: float
) -> _Result:
    """Call ``attempt`` up to ``retries + 1`` times; raise _DownloadFailed when all fail."""
    for number in range(retries + 1):
        try:
            return attempt()
        except _RETRYABLE as error:
            if number == retries:
                attempts = "1 attempt" if retries == 0 else f"{retries + 1} attempts"
                raise _DownloadFailed(url, f"{error} (gave up after {attempts})") from error
            delay = min(backoff * 2**number, MAX_BACKOFF_SECONDS)
            logger.warning(
                "Download of %s failed (%s); retry %d of %d in %.1f s",
                url,
                error,
                number + 1,
                retries,
                delay,
            )
            time.sleep(delay)
        except requests.RequestException as error:
            # Not retried: an invalid URL, too many redirects and the like.
            raise _DownloadFailed(url, str(error)) from error
    raise AssertionError("unreachable: the last attempt returns or raises")


def _raise_for_status(response: requests.Response, url: str) -> None:
    """Raise _TransientError for HTTP 429 and 5xx, _DownloadFailed for other errors."""
    status = response.status_code
    if status < 300:
        return
    description = f"HTTP {status} {response.reason}"
    if status == 429 or status >= 500:
        raise _TransientError(description)
    raise _DownloadFailed(url, description)


def _get_md5_text(session: requests.Session, url: str, timeout: float) -> str:
    with session.get(url, stream=True, timeout=timeout) as response:
        _raise_for_status(response, url)
        body = bytearray()
        for chunk in response.iter_content(4096):
            body += chunk
            if len(body) > MAX_MD5_FILE_BYTES:
                raise _DownloadFailed(
                    url,
                    f"the response is larger than {MAX_MD5_FILE_BYTES} bytes, so it is "
                    "not an md5 checksum file",
                )
    return body.decode("utf-8", errors="replace")


def _content_range(response: requests.Response) -> tuple[int, int | None] | None:
    """Return the first byte and the full length (None if unknown) from Content-Range."""
    match = _CONTENT_RANGE.match(response.headers.get("Content-Range", "").strip())
    if match is None:
        return None
    total = match.group("total")
    return int(match.group("start")), None if total == "*" else int(total)


def _open_download(
    session: requests.Session, url: str, part_path: Path, timeout: float
) -> tuple[requests.Response, int, int | None]:
    """Start the download of ``url`` and return the response, its first byte and the length.

    When ``part_path`` exists, the request has a Range header for the rest of the file. A 200
    response to it means that the server ignored Range, and the body is the whole file again.
    """
    # identity: Range offsets and Content-Length must count the bytes of the file itself.
    headers = {"Accept-Encoding": "identity"}
    offset = part_path.stat().st_size if part_path.is_file() else 0
    if offset:
        headers["Range"] = f"bytes={offset}-"
    response = session.get(url, headers=headers, stream=True, timeout=timeout)

    if response.status_code == 200:
        if offset:
            logger.info("%s ignored the Range request, so the download starts over", url)
        length = response.headers.get("Content-Length")
        return response, 0, int(length) if length and length.isdigit() else None

    content_range = _content_range(response) if response.status_code == 206 else None
    if offset and content_range is not None and content_range[0] == offset:
        logger.info("Resuming the download of %s at byte %d", url, offset)
        return response, offset, content_range[1]

    response.close()
    if offset and response.status_code in (206, 416):
        # 416 means that the part file is as long as the whole file or longer, and a 206 that
        # starts at another offset cannot be appended. So the part file is deleted.
        logger.warning(
            "%s cannot continue %s (HTTP %d), so the download starts over",
            url,
            part_path,
            response.status_code,
        )
        part_path.unlink()
        return _open_download(session, url, part_path, timeout)
    _raise_for_status(response, url)
    raise _DownloadFailed(url, f"unexpected HTTP {response.status_code} {response.reason}")


def _download_part(
    session: requests.Session, url: str, part_path: Path, timeout: float, progress: bool
) -> None:
    """Download ``url`` into ``part_path``, continuing after the bytes it already contains."""
    response, offset, total = _open_download(session, url, part_path, timeout)
    with (
        response,
        part_path.open("ab" if offset else "wb") as file,
        tqdm(
            total=total,
            initial=offset,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=part_path.name.removesuffix(".part"),
            file=sys.stderr,
            disable=not (progress and sys.stderr.isatty()),
        ) as bar,
    ):
        for chunk in response.iter_content(CHUNK_BYTES):
            file.write(chunk)
            bar.update(len(chunk))

    size = part_path.stat().st_size
    if total is not None and size != total:
        raise _TransientError(f"received {size} of {total} bytes")


# Unpacking.


def _unsafe_entry_problem(info: zipfile.ZipInfo) -> str | None:
    """Return why ``info`` must not be unpacked, or None if it is safe."""
    name = info.filename
    if name.startswith(("/", "\\")) or _WINDOWS_DRIVE.match(name):
        return "has an absolute path"
    if ".." in re.split(r"[/\\]", name):
        return "has a '..' component, which points outside the unpack folder"
    # The upper 16 bits of external_attr are the Unix mode of zips made on Unix.
    if stat.S_ISLNK(info.external_attr >> 16):
        return "is a symbolic link"
    return None


def _check_entries(archive: zipfile.ZipFile, zip_path: Path) -> None:
    for info in archive.infolist():
        problem = _unsafe_entry_problem(info)
        if problem is not None:
            raise DataSourceError(
                f"{zip_path} contains the entry {info.filename!r}, which {problem}, so it was "
                f"not unpacked. Delete {zip_path} and use a MovieLens zip from GroupLens."
            )


def _find_release_folder(root: Path, zip_path: Path) -> Path:
    """Return the shallowest folder under ``root`` that contains a release marker file."""
    folders = {
        path.parent for marker in RELEASE_MARKERS for path in root.rglob(marker) if path.is_file()
    }
    if not folders:
        raise DataSourceError(
            f"{zip_path} contains none of {', '.join(RELEASE_MARKERS)}, so it is not a "
            f"MovieLens release. Delete it and copy or download the release zip again."
        )
    return min(folders, key=lambda folder: (len(folder.relative_to(root).parts), str(folder)))


def _unpack(zip_path: Path, target: Path) -> Path:
    """Check ``zip_path``, unpack its release folder to ``target`` and return ``target``.

    NOTE: the unpacked size is not limited, so a zip bomb from a hostile mirror can fill the disk.
    """
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.unpack-", dir=target.parent))
    try:
        try:
            with zipfile.ZipFile(zip_path) as archive:
                _check_entries(archive, zip_path)
                damaged_entry = archive.testzip()
                if damaged_entry is not None:
                    raise zipfile.BadZipFile(f"CRC check failed on entry {damaged_entry!r}")
                archive.extractall(scratch)
        except (zipfile.BadZipFile, zlib.error, EOFError) as error:
            raise DataSourceError(
                f"{zip_path} is not a valid zip file or is damaged ({error}). Delete it so "
                f"that the next run downloads it again, or copy an intact {zip_path.name} there."
            ) from error

        release = _find_release_folder(scratch, zip_path)
        try:
            release.rename(target)
        except OSError:
            # Another process may have unpacked the same release in the meantime.
            if not _has_marker(target):
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    logger.info("Unpacked %s to %s", zip_path, target)
    return target
