"""Shared fixtures: one local Spark session per test session, and the real sample's location."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SAMPLE_DIR = Path(
    os.environ.get("LENSPARK_SAMPLE_DIR", REPO.parent / "shared/data/ml-latest-small")
)

# md5 of the 2016 edition of ml-latest-small; the exact figures are asserted only on it.
SAMPLE_2016_MD5 = {
    "ratings.csv": "ca345f6cdb982baf0ad30a226278c194",
    "movies.csv": "2b51e3eab5190e00cfe25fe703821586",
    "tags.csv": "59499cba90dc5ffaaf0e61257081a0e0",
    "links.csv": "8ba0feb51b8291395bd233b0ef566250",
}


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    """A local[2] session with few shuffle partitions, no UI and a temporary local dir."""
    from pyspark.sql import SparkSession

    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    local_dir = tmp_path_factory.mktemp("spark-local")
    session = (
        SparkSession.builder.master("local[2]")
        .appName("lenspark-tests")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.default.parallelism", "2")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.local.dir", str(local_dir))
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.driver.host", "127.0.0.1")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The real ml-latest-small folder; fails under CI and skips elsewhere when it is missing."""
    if not (SAMPLE_DIR / "ratings.csv").is_file():
        message = (
            f"the real ml-latest-small sample was not found at {SAMPLE_DIR}; "
            "set LENSPARK_SAMPLE_DIR to an unpacked copy"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return SAMPLE_DIR


@pytest.fixture(scope="session")
def sample_is_2016(sample_dir: Path) -> bool:
    """Whether the sample is the 2016 edition whose published figures the tests assert."""
    return all(_md5(sample_dir / name) == md5 for name, md5 in SAMPLE_2016_MD5.items())


@pytest.fixture(scope="session")
def figures_2016(sample_is_2016: bool) -> None:
    """Skip a test that asserts the 2016 edition's exact figures on another edition."""
    if not sample_is_2016:
        pytest.skip("the sample is not the 2016 edition of ml-latest-small; exact figures differ")


@pytest.fixture(scope="session")
def pipeline_run(sample_dir, tmp_path_factory):
    """Run `make pipeline` on the sample into a temporary warehouse; return the paths and output."""
    root = tmp_path_factory.mktemp("pipeline")
    warehouse = root / "warehouse"
    reports = root / "reports"
    env = make_environment()
    env.update(
        DATASET="ml-latest-small",
        MOVIELENS_DIR=str(sample_dir),
        CHECKPOINT_DIR=str(root / "checkpoints"),
    )
    command = [
        "make",
        "--no-print-directory",
        "pipeline",
        f"WAREHOUSE={warehouse}",
        f"REPORTS={reports}",
        "SPARK_MASTER=local[2]",
    ]
    result = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800
    )
    if result.returncode != 0:
        pytest.fail(
            f"{' '.join(command)} exited with {result.returncode}\n"
            f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-8000:]}"
        )
    return {
        "warehouse": warehouse / "ml-latest-small",
        "reports": reports / "ml-latest-small",
        "stdout": result.stdout,
        "stderr": result.stderr,
    }


def make_environment() -> dict[str, str]:
    """Return this process's environment without the variables of an enclosing make or Spark."""
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("MAKE", "MFLAGS", "PYSPARK", "SPARK_"))
    }


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listened on a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def moto_endpoint(tmp_path_factory):
    """URL of a moto_server S3 process on 127.0.0.1 that runs for one test module."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("moto") / "moto.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            if process.poll() is not None:
                pytest.fail(f"moto_server exited with code {process.returncode}; see {log_path}")
            try:
                urllib.request.urlopen(f"{url}/moto-api/", timeout=1).close()
                break
            except (urllib.error.URLError, OSError):
                time.sleep(0.2)
        else:
            pytest.fail(f"moto_server did not respond at {url} within 20 s; see {log_path}")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)
