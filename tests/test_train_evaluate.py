"""Tests of the train and evaluate stages and the Parquet reader on synthetic tables.

The tables are made here with NumPy and pyarrow in the prepare stage's layout: a folder
of part files with a ``_SUCCESS`` marker, next to the ``.crc`` files and the
``_temporary`` folder that Spark can leave behind.
"""

import ast
import json
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import lenspark
from lenspark import evaluate, manifest, parquet_io, storage, summary, train
from lenspark.config import Config
from lenspark.errors import IncompleteTableError, InputFormatError, LensparkError
from lenspark.model import build_reference_model

DATASET = "ml-synthetic"
TRAIN_ROWS = 300
TEST_ROWS = 100

PREPARED_SCHEMA = pa.schema(
    [
        ("userid", pa.int32()),
        ("movieid", pa.int32()),
        ("rating", pa.float64()),
        ("label", pa.int32()),
        ("timestamp", pa.int64()),
        ("title", pa.string()),
        ("genres", pa.string()),
        ("genre_index", pa.int32()),
        ("imdbid", pa.string()),
        ("tmdbid", pa.int32()),
        ("tags", pa.list_(pa.string())),
    ]
)

METRICS_KEYS = {
    "dataset",
    "test_rows",
    "train_rows",
    "test_accuracy",
    "test_loss",
    "majority_class",
    "majority_class_accuracy",
    "beats_majority",
}


# Relative frequencies of the half stars 0.5, 1.0, ..., 5.0. The first is skewed towards
# whole-star class 4 like real ratings, and the second towards class 3.
SKEWED_TO_4 = (1, 1, 2, 3, 5, 8, 10, 12, 5, 3)
SKEWED_TO_3 = (1, 1, 2, 3, 12, 12, 4, 4, 2, 2)


def synthetic_ratings(
    rows: int, seed: int, star_weights: tuple[int, ...] = SKEWED_TO_4
) -> pa.Table:
    """Make ``rows`` random ratings with the prepare stage's columns and types."""
    rng = np.random.default_rng(seed)
    weights = np.array(star_weights)
    ratings = rng.choice(np.arange(1, 11), size=rows, p=weights / weights.sum()) / 2
    labels = np.floor(ratings + 0.5).astype(np.int32)
    movie_ids = rng.integers(1, 200, size=rows, dtype=np.int32)
    tmdb_ids = [None if movie_id % 7 == 0 else int(movie_id) + 1000 for movie_id in movie_ids]
    return pa.table(
        {
            "userid": rng.integers(1, 40, size=rows, dtype=np.int32),
            "movieid": movie_ids,
            "rating": ratings.astype(np.float64),
            "label": labels,
            "timestamp": rng.integers(964_982_703, 1_537_799_250, size=rows, dtype=np.int64),
            "title": [f"Movie {movie_id} (2000)" for movie_id in movie_ids],
            "genres": ["Comedy|Drama" if movie_id % 2 else "Action" for movie_id in movie_ids],
            "genre_index": (movie_ids % 2).astype(np.int32),
            "imdbid": [f"{movie_id:07d}" for movie_id in movie_ids],
            "tmdbid": pa.array(tmdb_ids, pa.int32()),
            "tags": [["funny"] if movie_id % 3 == 0 else [] for movie_id in movie_ids],
        },
        schema=PREPARED_SCHEMA,
    )


def write_spark_table(folder: Path, table: pa.Table, *, complete: bool = True) -> None:
    """Write ``table`` as two part files in Spark's layout, plus leftovers a reader must skip."""
    folder.mkdir(parents=True)
    half = table.num_rows // 2
    pq.write_table(table.slice(0, half), folder / "part-00000-synthetic.snappy.parquet")
    pq.write_table(table.slice(half), folder / "part-00001-synthetic.snappy.parquet")
    # Neither file is Parquet, so reading either one would raise.
    (folder / ".part-00000-synthetic.snappy.parquet.crc").write_bytes(b"not parquet")
    (folder / "_temporary" / "0").mkdir(parents=True)
    (folder / "_temporary" / "0" / "part-00002-synthetic.snappy.parquet").write_bytes(b"partial")
    if complete:
        (folder / storage.SUCCESS_MARKER).touch()


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return Config(
        dataset=DATASET,
        warehouse=str(tmp_path / "warehouse"),
        reports=str(tmp_path / "reports"),
        seed=7,
        epochs=1,
        batch_size=32,
        checkpoint_dir=str(tmp_path / "checkpoints"),
    )


def table_folder(config: Config, table: str) -> Path:
    return Path(storage.table_uri(config.warehouse, config.dataset, table))


@pytest.fixture
def prepared(config: Config) -> dict[str, pa.Table]:
    """Write complete synthetic train and test tables and return them."""
    tables = {
        "train": synthetic_ratings(TRAIN_ROWS, seed=1),
        # A different majority class in test shows which labels the baseline came from.
        "test": synthetic_ratings(TEST_ROWS, seed=2, star_weights=SKEWED_TO_3),
    }
    for name, table in tables.items():
        write_spark_table(table_folder(config, name), table)
    return tables


def test_read_table_skips_leftover_files(config, prepared):
    uri = storage.table_uri(config.warehouse, config.dataset, "train")

    table = parquet_io.read_table(uri, ["userid", "label", "tags"])

    assert table.column_names == ["userid", "label", "tags"]
    assert table.num_rows == TRAIN_ROWS
    assert table.column("userid").to_pylist() == prepared["train"].column("userid").to_pylist()
    assert table.schema.field("tags").type == pa.list_(pa.string())


def test_read_table_missing_column(config, prepared):
    uri = storage.table_uri(config.warehouse, config.dataset, "train")

    with pytest.raises(InputFormatError, match="'user_id'") as raised:
        parquet_io.read_table(uri, ["userid", "user_id"])
    assert uri in str(raised.value)
    assert "make prepare" in str(raised.value)


def test_iter_batches_streams_every_row(config, prepared):
    uri = storage.table_uri(config.warehouse, config.dataset, "test")

    batches = list(parquet_io.iter_batches(uri, ["movieid", "rating"], batch_size=16))

    assert all(batch.num_rows <= 16 for batch in batches)
    assert sum(batch.num_rows for batch in batches) == TEST_ROWS
    assert all(batch.schema.names == ["movieid", "rating"] for batch in batches)
    ratings = [value for batch in batches for value in batch.column("rating").to_pylist()]
    assert ratings == prepared["test"].column("rating").to_pylist()


def test_iter_batches_rejects_zero_batch_size(config, prepared):
    uri = storage.table_uri(config.warehouse, config.dataset, "test")

    with pytest.raises(ValueError, match="batch_size"):
        next(parquet_io.iter_batches(uri, ["movieid"], batch_size=0))


def test_train_then_evaluate_one_epoch(config, prepared):
    train_counts = train.run(config)

    assert train_counts["rows_in"] == TRAIN_ROWS
    assert train_counts["epochs"] == 1
    assert 0.0 <= train_counts["final_accuracy"] <= 1.0
    assert train_counts["final_loss"] > 0.0

    model_path = table_folder(config, "models") / "reference.keras"
    assert model_path.is_file()
    assert train.model_uri(config) == str(model_path)

    report_dir = Path(config.report_dir)
    history = json.loads((report_dir / "training_history.json").read_text())
    assert len(history) == 1
    assert history[0]["epoch"] == 1
    assert history[0]["accuracy"] == train_counts["final_accuracy"]
    assert history[0]["loss"] == train_counts["final_loss"]
    assert (report_dir / "training_history.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")

    metrics = evaluate.run(config)

    assert metrics.keys() >= METRICS_KEYS
    assert json.loads((report_dir / "metrics.json").read_text()) == metrics
    assert metrics["dataset"] == DATASET
    assert metrics["test_rows"] == TEST_ROWS
    assert metrics["train_rows"] == TRAIN_ROWS
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    assert metrics["test_loss"] > 0.0
    assert metrics["beats_majority"] == (
        metrics["test_accuracy"] > metrics["majority_class_accuracy"]
    )

    # The baseline is the most frequent train label, scored on the test labels.
    train_labels = prepared["train"].column("label").to_numpy()
    test_labels = prepared["test"].column("label").to_numpy()
    expected_class = int(np.argmax(np.bincount(train_labels)))
    assert expected_class != int(np.argmax(np.bincount(test_labels)))
    assert metrics["majority_class"] == expected_class
    assert metrics["majority_class_accuracy"] == pytest.approx(
        np.mean(test_labels == expected_class)
    )

    entries = manifest.load_manifest(config)
    assert entries["train"]["counts"] == train_counts
    assert entries["train"]["outputs"]["model"] == str(model_path)
    assert entries["evaluate"]["counts"]["rows_in"] == TEST_ROWS
    assert entries["evaluate"]["counts"]["test_accuracy"] == metrics["test_accuracy"]
    assert entries["evaluate"]["outputs"]["metrics"] == str(report_dir / "metrics.json")

    text = summary.run(config)
    assert "majority-class baseline" in text
    assert ("did NOT beat" in text) != metrics["beats_majority"]
    assert f"{metrics['test_accuracy']:.4f}" in text
    assert str(model_path) in text
    assert str(report_dir / "training_history.png") in text


@pytest.mark.parametrize("layout", ["no_marker", "absent"])
def test_train_rejects_unfinished_table(config, layout):
    uri = storage.table_uri(config.warehouse, config.dataset, "train")
    if layout == "no_marker":
        write_spark_table(Path(uri), synthetic_ratings(20, seed=3), complete=False)

    with pytest.raises(IncompleteTableError) as raised:
        train.run(config)

    assert uri in str(raised.value)
    assert "make prepare" in str(raised.value)
    assert not Path(train.model_uri(config)).exists()


def test_train_main_logs_error_and_exits_1(config, caplog):
    argv = ["--dataset", DATASET, "--warehouse", config.warehouse, "--reports", config.reports]

    with caplog.at_level(logging.ERROR, logger="lenspark.train"):
        exit_code = train.main(argv)

    assert exit_code == 1
    assert "make prepare" in caplog.text


def test_evaluate_without_model_names_make_train(config, prepared):
    with pytest.raises(InputFormatError, match="make train") as raised:
        evaluate.run(config)

    assert train.model_uri(config) in str(raised.value)
    assert not Path(evaluate.metrics_uri(config)).exists()


def test_evaluate_rejects_corrupt_model(config, prepared):
    model_path = Path(train.model_uri(config))
    model_path.parent.mkdir(parents=True)
    model_path.write_bytes(b"not a zip file")

    with pytest.raises(InputFormatError, match="could not be loaded") as raised:
        evaluate.run(config)

    assert "make train" in str(raised.value)


def test_evaluate_rejects_unfinished_test_table(config, prepared):
    train.save_model(build_reference_model(), train.model_uri(config))
    test_uri = storage.table_uri(config.warehouse, config.dataset, "test")
    (Path(test_uri) / storage.SUCCESS_MARKER).unlink()

    with pytest.raises(IncompleteTableError) as raised:
        evaluate.run(config)

    assert test_uri in str(raised.value)
    assert "make prepare" in str(raised.value)


def test_summary_without_manifests(config):
    with pytest.raises(LensparkError, match="make run"):
        summary.run(config)


def lenspark_module_file(name: str) -> Path | None:
    """Return the source file of lenspark module ``name``, or None if it is not one."""
    parts = name.split(".")
    if parts[0] != "lenspark":
        return None
    package_dir = Path(lenspark.__file__).parent
    candidate = package_dir.joinpath(*parts[1:])
    if candidate.with_suffix(".py").is_file():
        return candidate.with_suffix(".py")
    if (candidate / "__init__.py").is_file():
        return candidate / "__init__.py"
    return None


def imported_modules(name: str, seen: set[str]) -> set[str]:
    """Return every module that ``name`` imports, following lenspark's own modules."""
    module_file = lenspark_module_file(name)
    assert module_file is not None, name
    found: set[str] = set()
    for node in ast.walk(ast.parse(module_file.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            # "from lenspark import storage" imports the module lenspark.storage.
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    for imported in sorted(found):
        if imported not in seen and lenspark_module_file(imported) is not None:
            seen.add(imported)
            found |= imported_modules(imported, seen)
    return found


@pytest.mark.parametrize("module", ["lenspark.train", "lenspark.evaluate", "lenspark.summary"])
def test_python_stage_never_imports_pyspark(module):
    # The training container has no Java, so pyspark must stay out of these stages.
    imported = imported_modules(module, seen=set())

    assert "lenspark.storage" in imported
    assert not [name for name in imported if name.split(".")[0] == "pyspark"]


def test_report_uri_absolute_unless_s3():
    local = train.report_uri(Config(reports="reports"), "metrics.json")
    remote = train.report_uri(Config(reports="s3://lenspark/reports"), "metrics.json")

    assert Path(local).is_absolute()
    assert local.endswith("/reports/ml-latest-small/metrics.json")
    assert remote == "s3://lenspark/reports/ml-latest-small/metrics.json"


@pytest.fixture
def s3_endpoint(monkeypatch):
    """Start a moto S3 server on a free port of 127.0.0.1 and point lenspark's S3 client at it."""
    boto3 = pytest.importorskip("boto3")
    moto_server = pytest.importorskip("moto.server")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    monkeypatch.setenv("S3_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(
        Bucket="lenspark-test"
    )
    yield endpoint
    server.stop()


@pytest.mark.slow
def test_train_evaluate_on_s3_warehouse(s3_endpoint):
    config = Config(
        dataset=DATASET,
        warehouse="s3://lenspark-test/warehouse",
        reports="s3://lenspark-test/reports",
        epochs=1,
    )
    filesystem = storage.s3_filesystem()
    for name, rows in (("train", TRAIN_ROWS), ("test", TEST_ROWS)):
        uri = storage.table_uri(config.warehouse, config.dataset, name)
        path = uri.split("://", 1)[1]
        pq.write_table(
            synthetic_ratings(rows, seed=5), f"{path}/part-00000.parquet", filesystem=filesystem
        )
        storage.write_bytes(f"{uri}/{storage.SUCCESS_MARKER}", b"")

    train_counts = train.run(config)
    metrics = evaluate.run(config)

    assert train_counts["rows_in"] == TRAIN_ROWS
    assert storage.exists("s3://lenspark-test/warehouse/ml-synthetic/models/reference.keras")
    assert storage.exists("s3://lenspark-test/reports/ml-synthetic/training_history.png")
    assert metrics["test_rows"] == TEST_ROWS
    assert storage.read_json("s3://lenspark-test/reports/ml-synthetic/metrics.json") == metrics
    assert manifest.load_manifest(config).keys() == {"train", "evaluate"}
