"""scripts/local_cluster.py: a real standalone master and worker on 127.0.0.1."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parent.parent
SPARK_SUBMIT = Path(sys.executable).parent / "spark-submit"

pytestmark = [pytest.mark.slow, pytest.mark.cluster]


def load_local_cluster():
    """Import scripts/local_cluster.py as a module (scripts/ is not a package)."""
    path = REPO / "scripts" / "local_cluster.py"
    spec = importlib.util.spec_from_file_location("local_cluster", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("local_cluster", module)
    spec.loader.exec_module(module)
    return module


local_cluster = load_local_cluster()

TINY_JOB = """
from pyspark.sql import SparkSession

spark = SparkSession.builder.appName("lenspark-cluster-test").getOrCreate()
total = spark.range(1, 101).selectExpr("sum(id) AS total").first().total
print(f"TOTAL={total} MASTER={spark.sparkContext.master}")
spark.stop()
"""


def spark_submit(master_url: str, properties: Path, job: Path) -> subprocess.CompletedProcess:
    """Run the venv's spark-submit in client mode against ``master_url``."""
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, SPARK_LOCAL_IP="127.0.0.1")
    command = [
        str(SPARK_SUBMIT),
        "--master",
        master_url,
        "--properties-file",
        str(properties),
        "--conf",
        "spark.ui.enabled=false",
        str(job),
    ]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A running local cluster with one core and 1 GiB, stopped after the module's tests."""
    state_dir = tmp_path_factory.mktemp("local-cluster")
    info = local_cluster.start_cluster(state_dir, cores=1, memory="1g")
    yield info
    local_cluster.stop_cluster(state_dir)


def test_master_shows_one_alive_worker(cluster):
    status = local_cluster.fetch_master_status(cluster.master_webui_url)
    states = [worker["state"] for worker in status["workers"]]
    assert states == ["ALIVE"]
    assert status["url"] == cluster.master_url


def test_state_files_recorded(cluster):
    state_dir = Path(cluster.state_dir)
    assert (state_dir / "master-url").read_text().strip() == cluster.master_url
    assert cluster.master_url.startswith("spark://127.0.0.1:")
    assert local_cluster.read_info(state_dir) == cluster
    conf = state_dir / "conf" / "spark-defaults.conf"
    assert conf.stat().st_mode & 0o077 == 0


def test_ports_bound_to_loopback(cluster):
    listening = {
        connection.laddr
        for pid in cluster.pids
        for connection in psutil.Process(pid).net_connections(kind="tcp")
        if connection.status == psutil.CONN_LISTEN
    }
    assert listening
    # The JVM reports IPv4 loopback as ::ffff:127.0.0.1 on dual-stack sockets.
    addresses = {address.ip.removeprefix("::ffff:") for address in listening}
    assert addresses == {"127.0.0.1"}
    # The master's REST server would listen on the fixed port 6066.
    assert 6066 not in {address.port for address in listening}


def test_second_start_rejected(cluster):
    with pytest.raises(local_cluster.ClusterError, match="still running"):
        local_cluster.start_cluster(Path(cluster.state_dir))


def test_spark_submit_runs_job(cluster, tmp_path):
    job = tmp_path / "tiny_job.py"
    job.write_text(TINY_JOB)
    base = tmp_path / "base.conf"
    base.write_text("spark.sql.shuffle.partitions 2\n")
    properties = local_cluster.write_submit_properties(Path(cluster.state_dir), base)

    result = spark_submit(cluster.master_url, properties, job)

    assert result.returncode == 0, result.stderr[-3000:]
    assert f"TOTAL=5050 MASTER={cluster.master_url}" in result.stdout
    assert properties.read_text().startswith("spark.sql.shuffle.partitions 2\n")
    assert properties.stat().st_mode & 0o077 == 0


def test_spark_submit_without_secret_fails(cluster, tmp_path):
    job = tmp_path / "tiny_job.py"
    job.write_text(TINY_JOB)
    wrong = tmp_path / "wrong.conf"
    wrong.write_text("spark.authenticate true\nspark.authenticate.secret not-the-secret\n")
    # The driver gives up after its registration attempts with the master fail.
    result = spark_submit(cluster.master_url, wrong, job)
    assert result.returncode != 0
    assert "TOTAL=" not in result.stdout
    assert "All masters are unresponsive" in result.stderr


def test_stop_ends_recorded_pids(tmp_path):
    info = local_cluster.start_cluster(tmp_path / "state", cores=1, memory="512m")
    assert local_cluster.is_running(info)

    stopped = local_cluster.stop_cluster(tmp_path / "state")

    assert sorted(stopped) == sorted(info.pids)
    for pid in info.pids:
        assert not psutil.pid_exists(pid)
    assert not (tmp_path / "state" / "master-url").exists()
    assert local_cluster.read_info(tmp_path / "state") is None
    assert local_cluster.stop_cluster(tmp_path / "state") == []
