"""Tests of lenspark.sources: where the MovieLens CSV files come from, and older formats."""

from __future__ import annotations

import hashlib
import io
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from lenspark.config import Config
from lenspark.errors import DataSourceError, InputFormatError
from lenspark.sources import detect_unsupported_format, locate_dataset

DATASET = "ml-test"
RATINGS_CSV = "userId,movieId,rating,timestamp\n1,10,4.0,1000000\n2,10,3.5,1000100\n"
# An address where nothing listens. A test that should not download uses it, so that an
# unexpected download fails the test instead of passing.
UNUSED_URL = "http://127.0.0.1:9"


def make_release(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def make_config(tmp_path: Path, **settings: str) -> Config:
    values = {"dataset": DATASET, "data_dir": str(tmp_path / "data"), "base_url": UNUSED_URL}
    values.update(settings)
    return Config(**values)  # type: ignore[arg-type]


# detect_unsupported_format.


def test_detect_ml_100k(tmp_path: Path) -> None:
    folder = make_release(tmp_path / "ml-100k", {"u.data": "1\t10\t4\t1000000\n"})

    message = detect_unsupported_format(folder)

    assert message is not None
    assert "ml-100k" in message
    assert "u.data" in message
    assert "tab-separated" in message
    assert "not supported yet" in message


def test_detect_ml_1m(tmp_path: Path) -> None:
    folder = make_release(tmp_path / "ml-1m", {"ratings.dat": "1::10::4::1000000\n"})

    message = detect_unsupported_format(folder)

    assert message is not None
    assert "ml-1m" in message
    assert "ratings.dat" in message
    assert "'::'" in message
    assert "not supported yet" in message


@pytest.mark.parametrize(
    "files",
    [
        {"ratings.csv": RATINGS_CSV},
        {"ratings.csv": RATINGS_CSV, "u.data": "1\t10\t4\t1000000\n"},
        {},
    ],
    ids=["csv", "csv-and-u.data", "empty"],
)
def test_detect_returns_none_without_older_format(tmp_path: Path, files: dict[str, str]) -> None:
    folder = make_release(tmp_path / "release", files)

    assert detect_unsupported_format(folder) is None


# locate_dataset with MOVIELENS_DIR.


def test_locate_movielens_dir_wins_over_cache(tmp_path: Path) -> None:
    chosen = make_release(tmp_path / "chosen", {"ratings.csv": RATINGS_CSV})
    make_release(tmp_path / "data" / DATASET, {"ratings.csv": RATINGS_CSV})
    config = make_config(tmp_path, movielens_dir=str(chosen))

    assert locate_dataset(config) == str(chosen.absolute())


@pytest.mark.parametrize("uri", ["s3://lenspark/raw/ml-test", "s3a://lenspark/raw/ml-test/"])
def test_locate_returns_s3_uri_unchanged(tmp_path: Path, uri: str) -> None:
    config = make_config(tmp_path, movielens_dir=uri)

    assert locate_dataset(config) == uri


def test_locate_missing_movielens_dir(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    config = make_config(tmp_path, movielens_dir=str(missing))

    with pytest.raises(DataSourceError) as error:
        locate_dataset(config)

    message = str(error.value)
    assert str(missing) in message
    assert "does not exist" in message
    assert "MOVIELENS_DIR" in message
    assert f"{tmp_path / 'data'}/" in message


def test_locate_movielens_dir_without_ratings(tmp_path: Path) -> None:
    folder = make_release(tmp_path / "empty", {"movies.csv": "movieId,title,genres\n"})
    config = make_config(tmp_path, movielens_dir=str(folder))

    with pytest.raises(DataSourceError) as error:
        locate_dataset(config)

    assert str(folder) in str(error.value)
    assert "contains no ratings.csv" in str(error.value)


def test_locate_movielens_dir_names_nested_release(tmp_path: Path) -> None:
    parent = tmp_path / "downloads"
    nested = make_release(parent / DATASET, {"ratings.csv": RATINGS_CSV})
    config = make_config(tmp_path, movielens_dir=str(parent))

    with pytest.raises(DataSourceError) as error:
        locate_dataset(config)

    assert f"{nested} contains one" in str(error.value)


def test_locate_movielens_dir_zip_file(tmp_path: Path) -> None:
    zip_file = tmp_path / f"{DATASET}.zip"
    zip_file.write_bytes(b"PK\x05\x06" + b"\0" * 18)
    config = make_config(tmp_path, movielens_dir=str(zip_file))

    with pytest.raises(DataSourceError) as error:
        locate_dataset(config)

    assert "is a zip file, not a folder" in str(error.value)
    assert f"{tmp_path / 'data'}/{DATASET}.zip" in str(error.value)


@pytest.mark.parametrize(
    ("rating_file", "release"),
    [("u.data", "ml-100k"), ("ratings.dat", "ml-1m")],
)
def test_locate_older_format_raises(tmp_path: Path, rating_file: str, release: str) -> None:
    folder = make_release(tmp_path / release, {rating_file: "1\t10\t4\t1000000\n"})
    config = make_config(tmp_path, movielens_dir=str(folder))

    with pytest.raises(InputFormatError) as error:
        locate_dataset(config)

    assert release in str(error.value)
    assert "not supported yet" in str(error.value)


# locate_dataset without MOVIELENS_DIR.


def test_locate_uses_cached_release(tmp_path: Path) -> None:
    cached = make_release(tmp_path / "data" / DATASET, {"ratings.csv": RATINGS_CSV})
    config = make_config(tmp_path)

    assert locate_dataset(config) == str(cached.absolute())


class ZipHandler(BaseHTTPRequestHandler):
    """Serves ``server.files`` by path and records every requested path."""

    def do_GET(self) -> None:
        self.server.requested.append(self.path)  # type: ignore[attr-defined]
        body = self.server.files.get(self.path)  # type: ignore[attr-defined]
        if body is None:
            self.send_error(404, "Not Found")
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def zip_server() -> Iterator[ThreadingHTTPServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), ZipHandler)
    httpd.daemon_threads = True
    httpd.files = {}  # type: ignore[attr-defined]
    httpd.requested = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=10)


def publish_release(server: ThreadingHTTPServer, files: dict[str, str]) -> str:
    """Publish ``<DATASET>.zip`` with ``files`` under a top folder and return the base URL."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in files.items():
            archive.writestr(f"{DATASET}/{name}", text)
    data = buffer.getvalue()
    md5_line = f"MD5 ({DATASET}.zip) = {hashlib.md5(data).hexdigest()}\n"
    server.files[f"/{DATASET}.zip"] = data  # type: ignore[attr-defined]
    server.files[f"/{DATASET}.zip.md5"] = md5_line.encode()  # type: ignore[attr-defined]
    host, port = server.server_address[:2]
    return f"http://{host}:{port}"


@pytest.mark.slow
def test_locate_downloads_when_nothing_cached(
    zip_server: ThreadingHTTPServer, tmp_path: Path
) -> None:
    base_url = publish_release(zip_server, {"ratings.csv": RATINGS_CSV})
    config = make_config(tmp_path, base_url=base_url)

    folder = locate_dataset(config)

    assert folder == str((tmp_path / "data" / DATASET).absolute())
    assert (Path(folder) / "ratings.csv").read_text() == RATINGS_CSV
    assert zip_server.requested == [f"/{DATASET}.zip.md5", f"/{DATASET}.zip"]  # type: ignore[attr-defined]


@pytest.mark.slow
def test_locate_downloaded_ml_100k_raises(zip_server: ThreadingHTTPServer, tmp_path: Path) -> None:
    base_url = publish_release(zip_server, {"u.data": "1\t10\t4\t1000000\n"})
    config = make_config(tmp_path, base_url=base_url)

    with pytest.raises(InputFormatError) as error:
        locate_dataset(config)

    assert "ml-100k" in str(error.value)
    assert (tmp_path / "data" / DATASET / "u.data").is_file()
