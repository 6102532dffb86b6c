"""lenspark.bucket against a real S3 API: moto_server on 127.0.0.1 with a free port."""

from __future__ import annotations

import socket
import sys
import types
from pathlib import Path

import pytest

from lenspark import bucket
from lenspark.errors import ConfigError, InputFormatError

MOTO_SERVER = Path(sys.executable).parent / "moto_server"
BUCKET = "lenspark-test"
CSV_CONTENTS = {
    "ratings.csv": "userId,movieId,rating,timestamp\n1,10,4.0,964982703\n2,10,3.5,964982224\n",
    "movies.csv": "movieId,title,genres\n10,Heat (1995),Action|Crime\n",
    "links.csv": "movieId,imdbId,tmdbId\n10,0113277,949\n",
    "tags.csv": "userId,movieId,tag,timestamp\n1,10,heist,1139045764\n",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def s3_env(monkeypatch, moto_endpoint):
    """Point lenspark.bucket at moto_server with dummy keys; return the endpoint."""
    monkeypatch.setenv("S3_ENDPOINT_URL", moto_endpoint)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "moto-test-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "moto-test-value")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    return moto_endpoint


@pytest.fixture
def client(s3_env):
    """A boto3 client with an empty BUCKET created on moto_server."""
    s3 = bucket.s3_client(max_attempts=1)
    s3.create_bucket(Bucket=BUCKET)
    yield s3
    for item in s3.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        s3.delete_object(Bucket=BUCKET, Key=item["Key"])
    s3.delete_bucket(Bucket=BUCKET)


@pytest.fixture
def dataset_dir(tmp_path) -> Path:
    """A folder named like a release, with four tiny hand-written CSV files."""
    folder = tmp_path / "ml-tiny"
    folder.mkdir()
    for name, text in CSV_CONTENTS.items():
        (folder / name).write_text(text)
    (folder / "README.txt").write_text("not uploaded\n")
    return folder


def _keys(client, prefix: str = "") -> list[str]:
    contents = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    return sorted(item["Key"] for item in contents)


def _body(client, key: str) -> str:
    return client.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode()


def test_parse_bucket_uri_cases():
    assert bucket.parse_bucket_uri("s3://lenspark") == ("lenspark", "")
    assert bucket.parse_bucket_uri("s3a://lenspark/") == ("lenspark", "")
    assert bucket.parse_bucket_uri("s3://lenspark/team/a") == ("lenspark", "team/a/")
    for invalid in ("lenspark", "/tmp/lenspark", "gs://lenspark", "s3://"):
        with pytest.raises(ConfigError, match="expected s3://"):
            bucket.parse_bucket_uri(invalid)


def test_raw_zone_uri_layout():
    assert bucket.raw_zone_uri("s3://lenspark", "ml-20m") == "s3://lenspark/raw/ml-20m/"


def test_upload_raw_missing_csv(tmp_path):
    folder = tmp_path / "ml-tiny"
    folder.mkdir()
    (folder / "ratings.csv").write_text(CSV_CONTENTS["ratings.csv"])
    with pytest.raises(InputFormatError) as raised:
        bucket.upload_raw(folder, f"s3://{BUCKET}")
    message = str(raised.value)
    assert str(folder) in message
    assert "movies.csv" in message
    assert "tags.csv" in message


@pytest.mark.slow
def test_upload_raw_writes_four_keys(client, dataset_dir):
    uris = bucket.upload_raw(dataset_dir, f"s3://{BUCKET}", client=client)
    expected_keys = sorted(f"raw/ml-tiny/{name}" for name in CSV_CONTENTS)
    assert _keys(client) == expected_keys
    assert sorted(uris) == [f"s3://{BUCKET}/{key}" for key in expected_keys]
    for name, text in CSV_CONTENTS.items():
        assert _body(client, f"raw/ml-tiny/{name}") == text


@pytest.mark.slow
def test_upload_raw_prefix_and_dataset(client, dataset_dir):
    bucket.upload_raw(dataset_dir, f"s3a://{BUCKET}/team", dataset="ml-other", client=client)
    assert _keys(client) == sorted(f"team/raw/ml-other/{name}" for name in CSV_CONTENTS)


@pytest.mark.slow
def test_upload_raw_skip_existing_same_size(client, dataset_dir):
    bucket.upload_raw(dataset_dir, f"s3://{BUCKET}", client=client)
    original = CSV_CONTENTS["movies.csv"]
    changed = original.replace("Heat", "Hoot")
    assert len(changed) == len(original)
    (dataset_dir / "movies.csv").write_text(changed)

    bucket.upload_raw(dataset_dir, f"s3://{BUCKET}", client=client, skip_existing=True)
    assert _body(client, "raw/ml-tiny/movies.csv") == original

    bucket.upload_raw(dataset_dir, f"s3://{BUCKET}", client=client, skip_existing=False)
    assert _body(client, "raw/ml-tiny/movies.csv") == changed


@pytest.mark.slow
def test_upload_raw_missing_bucket(s3_env, dataset_dir):
    with pytest.raises(ConfigError) as raised:
        bucket.upload_raw(dataset_dir, "s3://no-such-bucket", client=bucket.s3_client())
    message = str(raised.value)
    assert "no-such-bucket" in message
    assert "does not exist" in message
    assert s3_env in message
    assert "make cluster-up" in message


def test_upload_raw_unreachable_endpoint(monkeypatch, dataset_dir):
    # A port that was free a moment ago: nothing listens there.
    endpoint = f"http://127.0.0.1:{_free_port()}"
    monkeypatch.setenv("S3_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "unused-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "unused-value")
    client = bucket.s3_client(connect_timeout=1.0, read_timeout=1.0, max_attempts=1)
    with pytest.raises(ConfigError) as raised:
        bucket.upload_raw(dataset_dir, f"s3://{BUCKET}", client=client)
    message = str(raised.value)
    assert endpoint in message
    assert "is unreachable" in message
    assert "S3_ENDPOINT_URL" in message


@pytest.mark.slow
def test_download_prefix_skips_temporary(client, tmp_path):
    client.put_object(Bucket=BUCKET, Key="reports/ml-tiny/metrics.json", Body=b"{}")
    client.put_object(Bucket=BUCKET, Key="reports/ml-tiny/plots/loss.png", Body=b"png")
    client.put_object(Bucket=BUCKET, Key="reports/ml-tiny/_temporary/0/part", Body=b"x")
    client.put_object(Bucket=BUCKET, Key="reports/ml-other/metrics.json", Body=b"{}")

    files = bucket.download_prefix(f"s3://{BUCKET}/reports/ml-tiny", tmp_path, client=client)

    assert sorted(files) == [tmp_path / "metrics.json", tmp_path / "plots" / "loss.png"]
    assert (tmp_path / "plots" / "loss.png").read_bytes() == b"png"
    assert not (tmp_path / "_temporary").exists()


@pytest.fixture
def fake_sources(monkeypatch, dataset_dir):
    """Replace lenspark.sources with a stub whose locate_dataset returns ``dataset_dir``."""
    calls = []

    def locate_dataset(config):
        calls.append(config)
        return str(dataset_dir)

    module = types.ModuleType("lenspark.sources")
    module.locate_dataset = locate_dataset
    monkeypatch.setitem(sys.modules, "lenspark.sources", module)
    return calls


@pytest.mark.slow
def test_main_upload_raw(client, fake_sources, capsys):
    code = bucket.main(["upload-raw", "--dataset", "ml-tiny", "--bucket", f"s3://{BUCKET}"])
    assert code == 0
    assert fake_sources[0].dataset == "ml-tiny"
    assert _keys(client) == sorted(f"raw/ml-tiny/{name}" for name in CSV_CONTENTS)
    assert f"s3://{BUCKET}/raw/ml-tiny/ratings.csv" in capsys.readouterr().out


@pytest.mark.slow
def test_main_missing_bucket_message(s3_env, fake_sources, capsys):
    code = bucket.main(["upload-raw", "--dataset", "ml-tiny", "--bucket", "s3://absent"])
    error_output = capsys.readouterr().err
    assert code == 1
    assert error_output.startswith("error: Bucket absent does not exist")
    assert "Traceback" not in error_output


def test_main_rejects_bucket_movielens_dir(monkeypatch, capsys):
    module = types.ModuleType("lenspark.sources")
    module.locate_dataset = lambda config: config.movielens_dir
    monkeypatch.setitem(sys.modules, "lenspark.sources", module)
    code = bucket.main(["upload-raw", "--movielens-dir", "s3a://lenspark/raw/ml-tiny"])
    assert code == 1
    assert "is a bucket URI" in capsys.readouterr().err
