"""Tests of lenspark.download against a real HTTP server on 127.0.0.1.

The server publishes zips built here from made-up CSV rows. It can respond to the next
requests with 503, cut a body short, or ignore Range headers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import stat
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from lenspark.download import fetch_dataset, parse_md5_file
from lenspark.errors import DataSourceError

DATASET = "ml-test"
ZIP_NAME = f"{DATASET}.zip"
ZIP_PATH = f"/{ZIP_NAME}"
MD5_PATH = f"/{ZIP_NAME}.md5"

# 12,000 made-up ratings, about 250 KB: several of the 64 KiB chunks that the download
# writes, so that a body cut short leaves a part file to resume.
RATINGS_CSV = "userId,movieId,rating,timestamp\n" + "".join(
    f"{user},{movie},{(user * movie) % 5 + 1}.0,{1_000_000 + user * 100 + movie}\n"
    for user in range(1, 601)
    for movie in range(1, 21)
)
MOVIES_CSV = "movieId,title,genres\n" + "".join(
    f"{movie},Test Film {movie} (2001),Drama|Comedy\n" for movie in range(1, 11)
)


# The server.


@dataclasses.dataclass
class ServerState:
    """Files the server publishes, the failures it is set to produce, and the requests it got."""

    files: dict[str, bytes] = dataclasses.field(default_factory=dict)
    # Number of upcoming requests, for any path, that get 503.
    fail_next: int = 0
    # Path -> bytes of body sent before the connection closes, applied once per path.
    cut_short: dict[str, int] = dataclasses.field(default_factory=dict)
    # The next this-many requests wait stall_seconds before the response starts.
    stall_next: int = 0
    stall_seconds: float = 2.0
    honor_range: bool = True
    # (path, Range header or None) of every request, in order.
    requests: list[tuple[str, str | None]] = dataclasses.field(default_factory=list)
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def paths(self) -> list[str]:
        return [path for path, _ in self.requests]


class ReleaseServer(ThreadingHTTPServer):
    daemon_threads = True
    state: ServerState

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def handle_error(self, request: object, client_address: object) -> None:
        # After a timeout the client has closed the socket, so writing the stalled response
        # fails. Only that error is ignored, and any other error is still printed.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class ReleaseHandler(BaseHTTPRequestHandler):
    # HTTP/1.0: the server closes the connection after each response, so a body cut short
    # reaches the client as a connection closed before Content-Length bytes.
    protocol_version = "HTTP/1.0"
    server: ReleaseServer

    def do_GET(self) -> None:
        state = self.server.state
        range_header = self.headers.get("Range")
        with state.lock:
            state.requests.append((self.path, range_header))
            fail = state.fail_next > 0
            if fail:
                state.fail_next -= 1
            cut = state.cut_short.pop(self.path, None)
            stall = state.stall_next > 0
            if stall:
                state.stall_next -= 1

        if stall:
            time.sleep(state.stall_seconds)
        if fail:
            self.send_error(503, "Service Unavailable")
            return
        body = state.files.get(self.path)
        if body is None:
            self.send_error(404, "Not Found")
            return

        start = 0
        if range_header is not None and state.honor_range:
            start = int(range_header.removeprefix("bytes=").removesuffix("-"))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()

        payload = body[start:]
        if cut is not None:
            payload = payload[:cut]
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ReleaseServer]:
    httpd = ReleaseServer(("127.0.0.1", 0), ReleaseHandler)
    httpd.state = ServerState()
    # A short poll interval lets shutdown() return quickly in the teardown.
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=10)


# Zips and md5 files.


def build_zip(entries: dict[str, str]) -> bytes:
    """Build a zip in memory. Entries are stored uncompressed, so the CSV text appears as is."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, text in entries.items():
            archive.writestr(zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0)), text)
    return buffer.getvalue()


def release_zip(top: str = f"{DATASET}/") -> bytes:
    return build_zip({f"{top}ratings.csv": RATINGS_CSV, f"{top}movies.csv": MOVIES_CSV})


def symlink_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(f"{DATASET}/ratings.csv", RATINGS_CSV)
        link = zipfile.ZipInfo(f"{DATASET}/movies.csv")
        link.create_system = 3  # Unix, so that external_attr carries a Unix mode
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
    return buffer.getvalue()


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def bsd_md5_line(data: bytes) -> str:
    """An md5 file in the form GroupLens publishes."""
    return f"MD5 ({ZIP_NAME}) = {md5_hex(data)}\n"


def publish(server: ReleaseServer, data: bytes, md5_text: str | None = None) -> None:
    server.state.files[ZIP_PATH] = data
    server.state.files[MD5_PATH] = (md5_text or bsd_md5_line(data)).encode()


def fetch(server: ReleaseServer, data_dir: Path, **options: object) -> Path:
    """Call fetch_dataset with settings that keep failing tests short."""
    settings: dict[str, object] = {"progress": False, "timeout": 10.0, "backoff": 0.01}
    settings.update(options)
    return fetch_dataset(DATASET, data_dir, server.url, **settings)  # type: ignore[arg-type]


def assert_nothing_installed(data_dir: Path) -> None:
    """Assert that a failed fetch left no release folder, zip or unpack folder behind."""
    assert not (data_dir / DATASET).exists()
    assert not (data_dir / ZIP_NAME).exists()
    assert list(data_dir.glob(f".{DATASET}.unpack-*")) == []


# parse_md5_file, no server.


@pytest.mark.parametrize(
    "text",
    [
        f"MD5 ({ZIP_NAME}) = 0123456789ABCDEF0123456789abcdef\n",
        f"0123456789abcdef0123456789abcdef  {ZIP_NAME}\n",
        f"0123456789abcdef0123456789abcdef *{ZIP_NAME}\n",
        f"0123456789abcdef0123456789abcdef  ./datasets/{ZIP_NAME}\n",
        "0123456789abcdef0123456789abcdef\n",
        f"ffffffffffffffffffffffffffffffff  other.zip\n"
        f"0123456789abcdef0123456789abcdef  {ZIP_NAME}\n",
    ],
)
def test_parse_md5_file_accepts_known_forms(text: str) -> None:
    assert parse_md5_file(text, ZIP_NAME, "md5-source") == "0123456789abcdef0123456789abcdef"


def test_parse_md5_file_rejects_other_name() -> None:
    with pytest.raises(DataSourceError) as error:
        parse_md5_file("MD5 (ml-other.zip) = 0123456789abcdef0123456789abcdef", ZIP_NAME, "src")

    assert "ml-other.zip" in str(error.value)
    assert ZIP_NAME in str(error.value)
    assert "src" in str(error.value)


def test_parse_md5_file_rejects_html_page() -> None:
    with pytest.raises(DataSourceError) as error:
        parse_md5_file("<html><body>Not here</body></html>", ZIP_NAME, "http://x/ml-test.md5")

    assert "no md5 checksum" in str(error.value)
    assert "http://x/ml-test.md5" in str(error.value)


# Downloads.


@pytest.mark.slow
def test_fetch_downloads_and_verifies_md5(server: ReleaseServer, tmp_path: Path) -> None:
    data = release_zip()
    publish(server, data)
    data_dir = tmp_path / "data"

    folder = fetch(server, data_dir)

    assert folder == data_dir / DATASET
    assert (folder / "ratings.csv").read_text() == RATINGS_CSV
    assert (folder / "movies.csv").read_text() == MOVIES_CSV
    assert (data_dir / ZIP_NAME).read_bytes() == data
    assert (data_dir / f"{ZIP_NAME}.md5").read_text() == bsd_md5_line(data)
    assert sorted(path.name for path in data_dir.iterdir()) == [
        DATASET,
        ZIP_NAME,
        f"{ZIP_NAME}.md5",
    ]
    assert server.state.paths() == [MD5_PATH, ZIP_PATH]


@pytest.mark.slow
def test_fetch_accepts_md5sum_form(server: ReleaseServer, tmp_path: Path) -> None:
    data = release_zip()
    publish(server, data, md5_text=f"{md5_hex(data)}  {ZIP_NAME}\n")

    folder = fetch(server, tmp_path)

    assert (folder / "ratings.csv").read_text() == RATINGS_CSV


@pytest.mark.slow
def test_fetch_accepts_zip_without_top_folder(server: ReleaseServer, tmp_path: Path) -> None:
    publish(server, release_zip(top=""))

    folder = fetch(server, tmp_path)

    assert folder == tmp_path / DATASET
    assert (folder / "ratings.csv").read_text() == RATINGS_CSV


@pytest.mark.slow
def test_fetch_wrong_md5_deletes_part(server: ReleaseServer, tmp_path: Path) -> None:
    data = release_zip()
    wrong = md5_hex(b"some other file")
    publish(server, data, md5_text=f"MD5 ({ZIP_NAME}) = {wrong}\n")

    with pytest.raises(DataSourceError) as error:
        fetch(server, tmp_path)

    message = str(error.value)
    assert f"{server.url}{ZIP_PATH}" in message
    assert wrong in message
    assert md5_hex(data) in message
    assert not (tmp_path / f"{ZIP_NAME}.part").exists()
    assert_nothing_installed(tmp_path)


@pytest.mark.slow
def test_fetch_truncated_zip_is_rejected(server: ReleaseServer, tmp_path: Path) -> None:
    # The md5 matches the truncated bytes, so only the zip check can catch it.
    publish(server, release_zip()[:-200])

    with pytest.raises(DataSourceError) as error:
        fetch(server, tmp_path)

    assert "is not a valid zip file or is damaged" in str(error.value)
    assert str(tmp_path / ZIP_NAME) in str(error.value)
    assert not (tmp_path / DATASET).exists()
    assert list(tmp_path.glob(f".{DATASET}.unpack-*")) == []


@pytest.mark.slow
def test_fetch_damaged_entry_fails_crc(server: ReleaseServer, tmp_path: Path) -> None:
    data = bytearray(release_zip())
    # Entries are stored uncompressed, so the CSV text appears as is in the zip.
    position = bytes(data).index(b"userId,movieId") + 40
    data[position] ^= 0xFF
    publish(server, bytes(data))

    with pytest.raises(DataSourceError) as error:
        fetch(server, tmp_path)

    assert "CRC" in str(error.value)
    assert f"{DATASET}/ratings.csv" in str(error.value)
    assert not (tmp_path / DATASET).exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("data", "entry", "problem"),
    [
        (
            build_zip({f"{DATASET}/ratings.csv": RATINGS_CSV, f"{DATASET}/../../evil.csv": "x"}),
            f"{DATASET}/../../evil.csv",
            "'..'",
        ),
        (
            build_zip({f"{DATASET}/ratings.csv": RATINGS_CSV, "/tmp/evil.csv": "x"}),
            "/tmp/evil.csv",
            "absolute path",
        ),
        (symlink_zip(), f"{DATASET}/movies.csv", "symbolic link"),
    ],
    ids=["parent-dir", "absolute", "symlink"],
)
def test_fetch_rejects_unsafe_entry(
    server: ReleaseServer, tmp_path: Path, data: bytes, entry: str, problem: str
) -> None:
    publish(server, data)
    data_dir = tmp_path / "data"

    with pytest.raises(DataSourceError) as error:
        fetch(server, data_dir)

    message = str(error.value)
    assert repr(entry) in message
    assert problem in message
    assert not (data_dir / DATASET).exists()
    assert list(data_dir.glob(f".{DATASET}.unpack-*")) == []
    assert list(tmp_path.rglob("evil.csv")) == []


# Resume and retries.


@pytest.mark.slow
def test_fetch_resumes_part_file(server: ReleaseServer, tmp_path: Path) -> None:
    data = release_zip()
    publish(server, data)
    (tmp_path / f"{ZIP_NAME}.part").write_bytes(data[:1000])

    folder = fetch(server, tmp_path)

    assert server.state.requests == [(MD5_PATH, None), (ZIP_PATH, "bytes=1000-")]
    assert (tmp_path / ZIP_NAME).read_bytes() == data
    assert (folder / "ratings.csv").read_text() == RATINGS_CSV
    assert not (tmp_path / f"{ZIP_NAME}.part").exists()


@pytest.mark.slow
def test_fetch_restarts_when_range_ignored(server: ReleaseServer, tmp_path: Path) -> None:
    data = release_zip()
    publish(server, data)
    server.state.honor_range = False
    # These bytes do not start the zip, so appending the body to them would break the md5.
    (tmp_path / f"{ZIP_NAME}.part").write_bytes(b"\0" * 1000)

    fetch(server, tmp_path)

    assert server.state.requests[-1] == (ZIP_PATH, "bytes=1000-")
    assert (tmp_path / ZIP_NAME).read_bytes() == data


@pytest.mark.slow
def test_fetch_restarts_part_longer_than_file(server: ReleaseServer, tmp_path: Path) -> None:
    data = release_zip()
    publish(server, data)
    too_long = len(data) + 10
    (tmp_path / f"{ZIP_NAME}.part").write_bytes(b"\0" * too_long)

    fetch(server, tmp_path)

    assert server.state.requests == [
        (MD5_PATH, None),
        (ZIP_PATH, f"bytes={too_long}-"),
        (ZIP_PATH, None),
    ]
    assert (tmp_path / ZIP_NAME).read_bytes() == data


@pytest.mark.slow
def test_fetch_resumes_after_body_cut_short(server: ReleaseServer, tmp_path: Path) -> None:
    data = release_zip()
    publish(server, data)
    cut = 200_000
    server.state.cut_short[ZIP_PATH] = cut

    fetch(server, tmp_path)

    assert server.state.paths() == [MD5_PATH, ZIP_PATH, ZIP_PATH]
    assert server.state.requests[1][1] is None
    # The bytes after the last whole chunk are lost with the connection, so the resume
    # starts at or before the cut.
    resume_header = server.state.requests[2][1]
    assert resume_header is not None
    resume_start = int(resume_header.removeprefix("bytes=").removesuffix("-"))
    assert 0 < resume_start <= cut
    assert (tmp_path / ZIP_NAME).read_bytes() == data


@pytest.mark.slow
def test_fetch_retries_after_503(
    server: ReleaseServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    publish(server, release_zip())
    server.state.fail_next = 2

    with caplog.at_level(logging.WARNING, logger="lenspark.download"):
        folder = fetch(server, tmp_path, retries=3)

    assert (folder / "ratings.csv").read_text() == RATINGS_CSV
    assert server.state.paths() == [MD5_PATH, MD5_PATH, MD5_PATH, ZIP_PATH]
    retry_logs = [record for record in caplog.records if "retry" in record.getMessage()]
    assert len(retry_logs) == 2


@pytest.mark.slow
def test_fetch_retries_after_timeout(server: ReleaseServer, tmp_path: Path) -> None:
    publish(server, release_zip())
    server.state.stall_next = 1

    folder = fetch(server, tmp_path, timeout=0.5)

    assert (folder / "ratings.csv").read_text() == RATINGS_CSV
    assert server.state.paths() == [MD5_PATH, MD5_PATH, ZIP_PATH]


@pytest.mark.slow
def test_fetch_gives_up_after_retries(server: ReleaseServer, tmp_path: Path) -> None:
    publish(server, release_zip())
    server.state.fail_next = 100
    data_dir = tmp_path / "data"

    with pytest.raises(DataSourceError) as error:
        fetch(server, data_dir, retries=2)

    message = str(error.value)
    assert f"{server.url}{MD5_PATH}" in message
    assert "503" in message
    assert "3 attempts" in message
    assert "MOVIELENS_DIR" in message
    assert f"{data_dir}/" in message
    assert server.state.paths() == [MD5_PATH] * 3
    assert_nothing_installed(data_dir)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("published", "failing_path", "expected_paths"),
    [
        ({}, MD5_PATH, [MD5_PATH]),
        ({MD5_PATH: bsd_md5_line(b"zip").encode()}, ZIP_PATH, [MD5_PATH, ZIP_PATH]),
    ],
    ids=["md5-missing", "zip-missing"],
)
def test_fetch_404_fails_fast(
    server: ReleaseServer,
    tmp_path: Path,
    published: dict[str, bytes],
    failing_path: str,
    expected_paths: list[str],
) -> None:
    server.state.files.update(published)
    data_dir = tmp_path / "data"

    with pytest.raises(DataSourceError) as error:
        fetch(server, data_dir, retries=3)

    message = str(error.value)
    assert f"{server.url}{failing_path}" in message
    assert "404" in message
    assert "MOVIELENS_DIR" in message
    assert f"copy {ZIP_NAME} into {data_dir}/" in message
    assert server.state.paths() == expected_paths


def test_fetch_invalid_base_url_fails(tmp_path: Path) -> None:
    with pytest.raises(DataSourceError) as error:
        fetch_dataset(DATASET, tmp_path, "ftp.example.invalid/movielens", progress=False)

    assert "ftp.example.invalid/movielens/ml-test.zip.md5" in str(error.value)
    assert "MOVIELENS_DIR" in str(error.value)


# Caches.


@pytest.mark.slow
def test_fetch_unpacked_cache_makes_no_request(server: ReleaseServer, tmp_path: Path) -> None:
    cached = tmp_path / DATASET
    cached.mkdir()
    (cached / "ratings.csv").write_text(RATINGS_CSV)

    folder = fetch(server, tmp_path)

    assert folder == cached
    assert server.state.requests == []


@pytest.mark.slow
def test_fetch_verified_zip_makes_no_request(server: ReleaseServer, tmp_path: Path) -> None:
    data = release_zip()
    (tmp_path / ZIP_NAME).write_bytes(data)
    (tmp_path / f"{ZIP_NAME}.md5").write_text(bsd_md5_line(data))

    folder = fetch(server, tmp_path)

    assert (folder / "ratings.csv").read_text() == RATINGS_CSV
    assert server.state.requests == []


@pytest.mark.slow
def test_fetch_hand_copied_zip_logs_warning(
    server: ReleaseServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / ZIP_NAME).write_bytes(release_zip())

    with caplog.at_level(logging.WARNING, logger="lenspark.download"):
        folder = fetch(server, tmp_path)

    assert (folder / "ratings.csv").read_text() == RATINGS_CSV
    assert server.state.requests == []
    assert any("md5 was not checked" in record.getMessage() for record in caplog.records)


@pytest.mark.slow
def test_fetch_hand_copied_truncated_zip_fails(server: ReleaseServer, tmp_path: Path) -> None:
    (tmp_path / ZIP_NAME).write_bytes(release_zip()[:3000])

    with pytest.raises(DataSourceError) as error:
        fetch(server, tmp_path)

    assert "is not a valid zip file or is damaged" in str(error.value)
    assert server.state.requests == []


@pytest.mark.slow
def test_fetch_cached_zip_wrong_md5_fails(server: ReleaseServer, tmp_path: Path) -> None:
    data = release_zip()
    (tmp_path / ZIP_NAME).write_bytes(data)
    (tmp_path / f"{ZIP_NAME}.md5").write_text(bsd_md5_line(b"an older release"))

    with pytest.raises(DataSourceError) as error:
        fetch(server, tmp_path)

    message = str(error.value)
    assert md5_hex(data) in message
    assert md5_hex(b"an older release") in message
    assert "Delete both files" in message
    assert server.state.requests == []
    assert not (tmp_path / DATASET).exists()


@pytest.mark.slow
def test_fetch_folder_without_ratings_fails(server: ReleaseServer, tmp_path: Path) -> None:
    (tmp_path / DATASET).mkdir()

    with pytest.raises(DataSourceError) as error:
        fetch(server, tmp_path)

    assert str(tmp_path / DATASET) in str(error.value)
    assert "ratings.csv" in str(error.value)
    assert server.state.requests == []
