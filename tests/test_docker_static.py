"""Static checks of the Docker cluster files, which this machine cannot run.

No Docker engine is needed: the Dockerfiles go through hadolint, the compose file
through the Compose specification schema, and the remaining tests read the files.
The entrypoint and the jar download script are plain POSIX shell and run here.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
DOCKER = REPO / "docker"
BIN = Path(sys.executable).parent
COMPOSE_FILE = DOCKER / "docker-compose.yml"
DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))
# Services that run until stopped; the one-shot services exit when their work is done.
LONG_RUNNING = {"minio", "spark-master", "spark-worker", "spark-history"}
ONE_SHOT = {"minio-init", "spark-submit", "trainer"}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|ROOT_USER")


def read_env_file(path: Path) -> dict[str, str]:
    """Parse KEY=VALUE lines, skipping comments and blank lines."""
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def read_properties(text: str) -> dict[str, str]:
    """Parse a Spark properties file; a later value of a key replaces an earlier one."""
    values = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "!")):
            key, _, value = line.partition(" ")
            values[key] = value.strip()
    return values


def pinned_version(requirements: list[str], name: str) -> str:
    """Return the ``==`` version of ``name`` in a list of requirement strings."""
    for requirement in requirements:
        match = re.fullmatch(rf"{re.escape(name)}==([\w.]+)", requirement.strip())
        if match:
            return match.group(1)
    raise AssertionError(f"{name} is not pinned with == in {requirements}")


@pytest.fixture(scope="module")
def compose() -> dict:
    """The compose file with its YAML anchors and merge keys resolved."""
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def jars() -> dict[str, str]:
    """The jar versions pinned in docker/jars.env."""
    return read_env_file(DOCKER / "jars.env")


@pytest.fixture(scope="module")
def pyproject() -> dict:
    """pyproject.toml, where every dependency is pinned."""
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_dockerfiles_present():
    names = [path.name for path in DOCKERFILES]
    assert names == ["spark.Dockerfile", "trainer.Dockerfile"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_hadolint_passes(dockerfile):
    result = subprocess.run(
        [str(BIN / "hadolint"), str(dockerfile)], capture_output=True, text=True, cwd=REPO
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "script",
    sorted([*(REPO / "docker").glob("*.sh"), REPO / ".ci/run"]),
    ids=lambda path: path.name,
)
def test_shellcheck_passes(script):
    result = subprocess.run(
        [str(BIN / "shellcheck"), "--shell=bash", "--external-sources", str(script)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_matches_compose_spec():
    result = subprocess.run(
        [
            str(BIN / "check-jsonschema"),
            "--builtin-schema",
            "vendor.compose-spec",
            str(COMPOSE_FILE),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_images_install_from_pyproject_extras():
    spark = (DOCKER / "spark.Dockerfile").read_text()
    trainer = (DOCKER / "trainer.Dockerfile").read_text()
    assert "pip install --no-cache-dir '.[spark]'" in spark
    assert "pip install --no-cache-dir '.[train]'" in trainer
    # A version named in a Dockerfile would be a second pin.
    for text in (spark, trainer):
        assert not re.search(r"pip install[^\n]*==", text)
    assert "openjdk" not in trainer


def test_pyspark_pin_matches_venv_and_jars(pyproject, jars):
    import pyspark

    pin = pinned_version(pyproject["project"]["optional-dependencies"]["spark"], "pyspark")
    assert pyspark.__version__ == pin
    assert jars["SPARK_HADOOP_CLOUD_VERSION"] == pin


def test_hadoop_aws_matches_client_api(jars):
    import pyspark

    jar_dir = Path(pyspark.__file__).parent / "jars"
    api_jars = list(jar_dir.glob("hadoop-client-api-*.jar"))
    assert len(api_jars) == 1, api_jars
    api_version = api_jars[0].name.removeprefix("hadoop-client-api-").removesuffix(".jar")
    assert jars["HADOOP_AWS_VERSION"] == api_version


def test_jars_env_pins_every_jar(jars):
    assert jars["MAVEN_REPOSITORY"] == "https://repo1.maven.org/maven2"
    for key in (
        "HADOOP_AWS_VERSION",
        "AWS_SDK_BUNDLE_VERSION",
        "ANALYTICS_ACCELERATOR_VERSION",
        "SPARK_HADOOP_CLOUD_VERSION",
    ):
        assert re.fullmatch(r"\d+\.\d+\.\d+", jars[key]), key
    assert jars["SCALA_BINARY_VERSION"] == "2.13"


def _run_download_script(tmp_path: Path, hadoop_aws_version: str) -> subprocess.CompletedProcess:
    env_file = tmp_path / "jars.env"
    text = (DOCKER / "jars.env").read_text()
    env_file.write_text(
        re.sub(r"(?m)^HADOOP_AWS_VERSION=.*$", f"HADOOP_AWS_VERSION={hadoop_aws_version}", text)
    )
    target = tmp_path / "jars"
    target.mkdir()
    (target / "hadoop-client-api-3.5.0.jar").write_bytes(b"")
    return subprocess.run(
        ["sh", str(DOCKER / "download-jars.sh"), str(env_file), str(target)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_download_jars_rejects_version_mismatch(tmp_path):
    # The check runs before any download, so no network is used.
    result = _run_download_script(tmp_path, "9.9.9")
    assert result.returncode == 1
    assert "hadoop-client-api-9.9.9.jar not found" in result.stderr
    assert "hadoop-client-api-3.5.0.jar" in result.stderr
    assert list((tmp_path / "jars").iterdir()) == [tmp_path / "jars/hadoop-client-api-3.5.0.jar"]


def test_download_jars_verifies_checksums():
    script = (DOCKER / "download-jars.sh").read_text()
    assert "--proto '=https'" in script
    assert "sha512sum" in script
    assert "sha1sum" in script
    assert '[ "$actual" != "$expected" ]' in script


def test_services_are_known(compose):
    assert set(compose["services"]) == LONG_RUNNING | ONE_SHOT


@pytest.mark.parametrize("name", sorted(LONG_RUNNING))
def test_long_running_service_has_healthcheck(compose, name):
    service = compose["services"][name]
    assert service.get("restart") == "unless-stopped"
    assert "profiles" not in service
    healthcheck = service.get("healthcheck", {})
    assert healthcheck.get("test"), f"{name} has no health check"
    assert not healthcheck.get("disable", False)


@pytest.mark.parametrize("name", sorted(ONE_SHOT))
def test_one_shot_service_never_restarts(compose, name):
    assert compose["services"][name].get("restart", "no") == "no"


def test_published_ports_bind_loopback(compose):
    published = []
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            published.append((name, port))
            if isinstance(port, dict):
                assert port.get("host_ip") == "127.0.0.1", (name, port)
            else:
                assert str(port).startswith("127.0.0.1:"), (name, port)
    published_services = {name for name, _ in published}
    assert published_services == {"minio", "spark-master", "spark-history"}


def test_workers_publish_nothing(compose):
    worker = compose["services"]["spark-worker"]
    assert "ports" not in worker
    assert "container_name" not in worker
    assert "hostname" not in worker


def test_minio_images_pinned(compose):
    minio = compose["services"]["minio"]["image"]
    mc = compose["services"]["minio-init"]["image"]
    assert minio == "${MINIO_IMAGE:-quay.io/minio/minio:RELEASE.2025-09-07T16-13-09Z}"
    assert mc == "${MC_IMAGE:-quay.io/minio/mc:RELEASE.2025-08-13T08-35-41Z}"
    assert compose["services"]["minio"]["healthcheck"]["test"] == ["CMD", "mc", "ready", "local"]
    init_script = compose["services"]["minio-init"]["command"][0]
    assert "mc mb --ignore-existing local/lenspark" in init_script


def test_compose_secrets_required_from_env(compose):
    """Every credential in the compose file is ${VAR:?message}, never a literal."""
    checked = 0
    for name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if SECRET_NAME.search(key):
                checked += 1
                assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]+\}", str(value)), (name, key, value)
    assert checked >= 10


def test_env_example_leaves_secrets_empty():
    values = read_env_file(REPO / ".env.example")
    secrets = {key: value for key, value in values.items() if SECRET_NAME.search(key)}
    assert set(secrets) == {"MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD", "SPARK_AUTH_SECRET"}
    for key, value in secrets.items():
        assert value == "", f".env.example sets {key}"


def _repository_files() -> list[Path]:
    """Files git tracks or would add (not ignored); .env and data stay out."""
    result = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    )
    return [REPO / name for name in result.stdout.split("\0") if name]


AWS_KEY_PATTERNS = (
    re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    re.compile(r"(?i)aws_secret_access_key\s*[:=]\s*['\"]?[A-Za-z0-9/+=]{40}\b"),
    re.compile(r"(?i)(minio_root_password|spark_auth_secret)\s*[:=]\s*['\"]?[^\s$'\"{]{8,}"),
    re.compile(r"(?m)^\s*spark\.authenticate\.secret\s+\S+"),
    re.compile(r"(?m)^\s*spark\.hadoop\.fs\.s3a\.(access|secret)\.key\s+\S+"),
)


def test_no_credentials_committed():
    findings = []
    for path in _repository_files():
        if not path.is_file() or path == Path(__file__):
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for pattern in AWS_KEY_PATTERNS:
            for match in pattern.finditer(text):
                findings.append(f"{path.relative_to(REPO)}: {match.group(0)[:40]}")
    assert findings == []


def test_credential_scan_finds_planted_key():
    planted = "AWS_SECRET_ACCESS_KEY=" + "a1B2" * 10
    assert any(pattern.search(planted) for pattern in AWS_KEY_PATTERNS)
    assert any(pattern.search("MINIO_ROOT_PASSWORD=hunter2hunter2") for pattern in AWS_KEY_PATTERNS)
    assert not any(pattern.search("MINIO_ROOT_PASSWORD=") for pattern in AWS_KEY_PATTERNS)


def test_layered_conf_cluster_keys_win():
    shared = (REPO / "spark-defaults.conf").read_text()
    cluster = (DOCKER / "spark-cluster.conf").read_text()
    layered = read_properties(shared + "\n" + cluster)
    cluster_only = read_properties(cluster)
    for key, value in cluster_only.items():
        assert layered[key] == value
    assert layered["spark.hadoop.fs.s3a.endpoint"] == "http://minio:9000"
    assert layered["spark.hadoop.fs.s3a.path.style.access"] == "true"
    assert layered["spark.hadoop.fs.s3a.connection.ssl.enabled"] == "false"
    assert layered["spark.sql.sources.commitProtocolClass"] == (
        "org.apache.spark.internal.io.cloud.PathOutputCommitProtocol"
    )
    assert layered["spark.sql.parquet.output.committer.class"] == (
        "org.apache.spark.internal.io.cloud.BindingParquetOutputCommitter"
    )
    assert layered["spark.hadoop.fs.s3a.committer.name"] in ("magic", "directory")
    assert layered["spark.eventLog.dir"].startswith("s3a://lenspark/")
    assert layered["spark.history.fs.logDirectory"] == layered["spark.eventLog.dir"]
    assert layered["spark.authenticate"] == "true"
    assert "secret" in layered["spark.redaction.regex"]
    assert layered["spark.master.rest.enabled"] == "false"


def test_shared_defaults_need_no_cluster_jars():
    shared = read_properties((REPO / "spark-defaults.conf").read_text())
    assert not any("s3a" in key or "s3a://" in value for key, value in shared.items())
    assert "spark.sql.sources.commitProtocolClass" not in shared


def test_dockerfile_layers_conf_cluster_last():
    dockerfile = (DOCKER / "spark.Dockerfile").read_text()
    assert re.search(
        r"cat \S*/spark-defaults\.conf \S*/spark-cluster\.conf\s*\\?\s*> \S*/spark-layered\.conf",
        dockerfile,
    )


def _makefile_stages() -> list[str]:
    match = re.search(r"(?m)^SPARK_STAGES\s*:?=\s*(.+)$", (REPO / "Makefile").read_text())
    assert match, "SPARK_STAGES not found in the Makefile"
    return match.group(1).split()


def test_entrypoint_stages_match_makefile():
    script = (DOCKER / "spark-entrypoint.sh").read_text()
    match = re.search(r'(?m)^SPARK_STAGES="([^"]+)"', script)
    assert match
    assert match.group(1).split() == _makefile_stages()


@pytest.fixture
def lenspark_home(tmp_path) -> Path:
    """A stand-in for /opt/lenspark with the layered configuration the image builds."""
    conf = tmp_path / "conf"
    conf.mkdir()
    layered = (REPO / "spark-defaults.conf").read_text() + (
        DOCKER / "spark-cluster.conf"
    ).read_text()
    (conf / "spark-layered.conf").write_text(layered)
    return tmp_path


def _run_entrypoint(home: Path, *args: str, secret: str | None) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ["PATH"], "LENSPARK_HOME": str(home), "TMPDIR": str(home)}
    if secret is not None:
        env["SPARK_AUTH_SECRET"] = secret
    return subprocess.run(
        ["sh", str(DOCKER / "spark-entrypoint.sh"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_entrypoint_appends_secret_privately(lenspark_home):
    script = 'cat "$SPARK_CONF_DIR/spark-defaults.conf"; echo "SECRET_ENV=${SPARK_AUTH_SECRET:-}"'
    result = _run_entrypoint(lenspark_home, "sh", "-c", script, secret="0123abcd")
    assert result.returncode == 0, result.stderr
    conf_text, _, env_line = result.stdout.rpartition("SECRET_ENV=")
    assert read_properties(conf_text)["spark.authenticate.secret"] == "0123abcd"
    assert env_line.strip() == ""
    conf_files = list(lenspark_home.glob("tmp.*/spark-defaults.conf"))
    assert len(conf_files) == 1
    assert stat.S_IMODE(conf_files[0].stat().st_mode) == 0o600
    assert stat.S_IMODE(conf_files[0].parent.stat().st_mode) == 0o700


def test_entrypoint_requires_secret(lenspark_home):
    result = _run_entrypoint(lenspark_home, "master", secret="")
    assert result.returncode == 1
    assert "SPARK_AUTH_SECRET is empty" in result.stderr
    assert ".env.example" in result.stderr


def test_entrypoint_rejects_unknown_stage(lenspark_home):
    result = _run_entrypoint(lenspark_home, "submit", "ingest", "nosuch", secret="0123abcd")
    assert result.returncode == 2
    assert "unknown stage 'nosuch'" in result.stderr


@pytest.fixture
def without_docker(tmp_path) -> dict[str, str]:
    """An environment whose `docker` always fails, as when no engine responds."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    docker = fake_bin / "docker"
    docker.write_text("#!/bin/sh\necho 'Cannot connect to the Docker daemon' >&2\nexit 1\n")
    docker.chmod(0o755)
    return dict(os.environ, PATH=f"{fake_bin}:{os.environ['PATH']}")


def test_cluster_up_without_engine(without_docker):
    result = subprocess.run(
        ["make", "--no-print-directory", "cluster-up"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=without_docker,
        timeout=60,
    )
    assert result.returncode != 0
    assert "No Docker engine responds" in result.stdout
    assert "make local-cluster-up" in result.stdout


def test_submit_without_engine_or_cluster(without_docker, tmp_path):
    result = subprocess.run(
        ["make", "--no-print-directory", "submit", f"CLUSTER_STATE={tmp_path / 'none'}"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=without_docker,
        timeout=60,
    )
    assert result.returncode != 0
    assert "no local cluster is running" in result.stdout
    assert "make local-cluster-up" in result.stdout
