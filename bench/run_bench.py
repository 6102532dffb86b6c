"""Benchmark lenspark on one release: Spark ETL against DuckDB, training speed, ALS, stage costs.

``make bench`` runs every phase in order on the same CSV files and writes BENCHMARKS.md and a
plot of stage times. Each phase stores its figures in ``results.json`` under ``--work-dir`` as
soon as it ends, so ``--phases`` can rerun some phases and ``report`` alone rewrites the page.

Phases:

- ``spark-stages``: ingest, merge and prepare as a user runs them, one spark-submit each;
- ``duckdb``: the same three transforms in DuckDB (``bench/duckdb_etl.py``);
- ``checksum``: row counts and train/test key checksums of the Spark and DuckDB outputs;
- ``spark-session``: the three Spark stages in one SparkSession (``bench/spark_etl_session.py``),
  which then replace the tables of ``spark-stages`` with equal ones;
- ``explore``: the explore stage, one spark-submit (not part of the ETL comparison);
- ``index``: the index stage, one spark-submit;
- ``als``: the ALS stage, one spark-submit, with the grid it picks for the size of the data;
- ``throughput``: samples per second of the embedding model and of the reference recipe;
- ``compare``: ``python -m lenspark.compare`` with the models of ``--models``;
- ``report``: BENCHMARKS.md and the PNG plot from ``results.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import shlex
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from procstats import Measurement, measure

logger = logging.getLogger("bench")

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
PHASES = (
    "spark-stages",
    "duckdb",
    "checksum",
    "spark-session",
    "explore",
    "index",
    "als",
    "throughput",
    "compare",
    "report",
)
ETL_STAGES = ("ingest", "merge", "prepare")
DEFAULT_MODELS = "embedding,bias,global_mean,majority,popularity,als"
# Per-run Spark settings for about 20M ratings in local mode on 2 cores. With them every
# Spark stage of ml-20m-synthetic finished with the driver JVM below 6 GiB resident. The
# higher broadcast threshold lets adaptive execution broadcast the merge stage's per-pair tag
# lists instead of shuffling all 20M ratings. In one trial that cut the merged write from
# 90 s to 39 s.
DEFAULT_SPARK_SUBMIT_ARGS = (
    "--driver-memory 5g --conf spark.sql.shuffle.partitions=32 "
    "--conf spark.sql.adaptive.autoBroadcastJoinThreshold=128m"
)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line, with defaults from the Makefile's environment variables."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n", 1)[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    env = os.environ
    parser.add_argument("--dataset", default=env.get("DATASET") or "ml-20m-synthetic")
    parser.add_argument(
        "--movielens-dir",
        default=env.get("MOVIELENS_DIR") or None,
        help="folder of the CSV files (default data/DATASET)",
    )
    parser.add_argument("--warehouse", default=env.get("WAREHOUSE") or "warehouse")
    parser.add_argument("--reports", default=env.get("REPORTS") or "reports")
    parser.add_argument("--seed", type=int, default=int(env.get("SEED") or 1234))
    parser.add_argument(
        "--spark-submit-args",
        default=env.get("SPARK_SUBMIT_ARGS") or DEFAULT_SPARK_SUBMIT_ARGS,
        help="extra spark-submit options for every Spark run (env SPARK_SUBMIT_ARGS)",
    )
    parser.add_argument("--spark-master", default=env.get("SPARK_MASTER") or "local[*]")
    parser.add_argument("--models", default=DEFAULT_MODELS, help="models of the compare phase")
    parser.add_argument(
        "--throughput-rows",
        type=int,
        default=20_000_000,
        help="rows the embedding model trains on while its speed is timed; at most the fit "
        "table, so the default times one whole epoch at 20M ratings",
    )
    parser.add_argument(
        "--reference-rows",
        type=int,
        default=320_000,
        help="rows the reference recipe (batch 32) trains on while its speed is timed",
    )
    parser.add_argument(
        "--work-dir",
        default=None,
        help="folder of results.json, logs and DuckDB's tables (default build/bench/DATASET)",
    )
    parser.add_argument("--output", default="BENCHMARKS.md", help="the Markdown page to write")
    parser.add_argument(
        "--command",
        default=env.get("BENCH_COMMAND") or "python bench/run_bench.py",
        help="the command line shown on the page (env BENCH_COMMAND)",
    )
    parser.add_argument(
        "--plot", default="docs/bench/stage_times.png", help="the PNG plot of stage times"
    )
    parser.add_argument(
        "--phases",
        default="all",
        help=f"comma-separated phases among {', '.join(PHASES)}, or all",
    )
    args = parser.parse_args(argv)
    args.movielens_dir = args.movielens_dir or f"data/{args.dataset}"
    args.work_dir = Path(args.work_dir or f"build/bench/{args.dataset}")
    if args.phases == "all":
        args.phase_list = list(PHASES)
    else:
        args.phase_list = [name.strip() for name in args.phases.split(",") if name.strip()]
        unknown = sorted(set(args.phase_list) - set(PHASES))
        if unknown:
            parser.error(f"--phases got unknown phases {unknown}; choose among {PHASES}")
    return args


class Results:
    """The figures of every phase run so far, kept in ``results.json`` between runs."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict = json.loads(path.read_text()) if path.is_file() else {}

    def put(self, key: str, value) -> None:
        """Store ``value`` under ``key`` and write the file at once."""
        self.data[key] = value
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.data, indent=2, sort_keys=True) + "\n")


def stage_env(args: argparse.Namespace) -> dict[str, str]:
    """Return the environment the Makefile gives a stage, for the settings of ``args``."""
    venv_python = Path(sys.executable)
    return {
        "DATASET": args.dataset,
        "WAREHOUSE": args.warehouse,
        "REPORTS": args.reports,
        "MOVIELENS_DIR": args.movielens_dir,
        "SEED": str(args.seed),
        "MODELS": args.models,
        "PYSPARK_PYTHON": str(venv_python),
        "SPARK_CONF_DIR": str(REPO / "conf"),
        "SPARK_LOCAL_IP": os.environ.get("SPARK_LOCAL_IP", "127.0.0.1"),
    }


def spark_submit_command(args: argparse.Namespace, script: Path) -> list[str]:
    """Build the spark-submit command of the Makefile's stage targets for ``script``."""
    spark_submit = str(Path(sys.executable).parent / "spark-submit")
    return [
        spark_submit,
        "--master",
        args.spark_master,
        "--properties-file",
        str(REPO / "spark-defaults.conf"),
        *shlex.split(args.spark_submit_args),
        str(script),
    ]


def run_measured(
    args: argparse.Namespace, name: str, command: list[str], results: Results
) -> Measurement:
    """Run one measured command, store its figures under ``runs.<name>`` and fail on an error."""
    log_path = args.work_dir / "logs" / f"{name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    logger.info("%s started: %s (log %s)", name, " ".join(command), log_path)
    # Other users of the machine slow the run down; the load average shows how much.
    load_before = os.getloadavg()[0]
    result = measure(command, env=stage_env(args), cwd=REPO, log_path=log_path)
    runs = results.data.get("runs", {})
    runs[name] = {
        **result.as_dict(),
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "load_average_before": round(load_before, 2),
        "load_average_after": round(os.getloadavg()[0], 2),
    }
    if Path(command[0]).name == "spark-submit":
        runs[name]["spark_submit_args"] = args.spark_submit_args
    results.put("runs", runs)
    if result.returncode != 0:
        raise SystemExit(
            f"{name} failed with exit code {result.returncode}; its output is in {log_path}"
        )
    return result


def phase_spark_stages(args: argparse.Namespace, results: Results) -> None:
    """Run ingest, merge and prepare as a user runs them: one spark-submit per stage."""
    for stage in ETL_STAGES:
        command = spark_submit_command(args, REPO / "jobs" / f"{stage}.py")
        run_measured(args, stage, command, results)


def phase_duckdb(args: argparse.Namespace, results: Results) -> None:
    """Run the DuckDB version of ingest, merge and prepare on the same CSV files."""
    out = args.work_dir / "duckdb"
    shutil.rmtree(out, ignore_errors=True)
    result_path = args.work_dir / "duckdb_result.json"
    command = [
        sys.executable,
        str(BENCH / "duckdb_etl.py"),
        "--source",
        args.movielens_dir,
        "--out",
        str(out),
        "--seed",
        str(args.seed),
        "--result",
        str(result_path),
    ]
    run_measured(args, "duckdb", command, results)
    results.put("duckdb", json.loads(result_path.read_text()))


def phase_spark_session(args: argparse.Namespace, results: Results) -> None:
    """Run ingest, merge and prepare in one SparkSession: one spark-submit for all three."""
    command = spark_submit_command(args, BENCH / "spark_etl_session.py")
    run_measured(args, "spark_session", command, results)
    results.put("spark_session_manifest", stage_counts(args, ETL_STAGES))


def lenspark_config(args: argparse.Namespace):
    """Return the lenspark Config of the benchmarked dataset and warehouse."""
    from lenspark.config import Config

    return Config(dataset=args.dataset, warehouse=args.warehouse, reports=args.reports)


def stage_counts(args: argparse.Namespace, stages: Sequence[str]) -> dict:
    """Return the counts and seconds that the manifests of ``stages`` hold."""
    from lenspark.manifest import load_manifest

    entries = load_manifest(lenspark_config(args))
    return {
        stage: {"counts": entries[stage]["counts"], "seconds": entries[stage]["seconds"]}
        for stage in stages
        if stage in entries
    }


def phase_checksum(args: argparse.Namespace, results: Results) -> None:
    """Compare the row counts and the train/test key checksums of Spark's and DuckDB's tables."""
    import pyarrow.dataset as pads
    from duckdb_etl import key_checksum

    from lenspark import parquet_io, storage

    spark_counts = stage_counts(args, ETL_STAGES)
    duckdb_counts = results.data["duckdb"]
    comparison = {}
    for table in ("train", "test"):
        uri = storage.table_uri(args.warehouse, args.dataset, table)
        spark_keys = key_checksum(parquet_io.open_dataset(uri, ["userid", "movieid"]))
        duckdb_path = args.work_dir / "duckdb" / f"{table}.parquet"
        duckdb_keys = key_checksum(pads.dataset(str(duckdb_path), format="parquet"))
        comparison[table] = {"spark": spark_keys, "duckdb": duckdb_keys}
    pairs = {
        "ratings rows": (
            spark_counts["ingest"]["counts"]["ratings"]["rows_out"],
            duckdb_counts["ingest"]["ratings"]["rows_out"],
        ),
        "ratings rejected": (
            spark_counts["ingest"]["counts"]["ratings"]["rows_rejected"],
            duckdb_counts["ingest"]["ratings"]["rows_rejected"],
        ),
        "merged rows": (
            spark_counts["merge"]["counts"]["rows_out"],
            duckdb_counts["merge"]["rows_out"],
        ),
        "plain left join rows": (
            spark_counts["merge"]["counts"]["plain_left_join_rows"],
            duckdb_counts["merge"]["plain_left_join_rows"],
        ),
        "tags without rating": (
            spark_counts["merge"]["counts"]["tags_without_rating"],
            duckdb_counts["merge"]["tags_without_rating"],
        ),
        "genre strings": (
            spark_counts["prepare"]["counts"]["genre_strings"],
            duckdb_counts["prepare"]["genre_strings"],
        ),
        "test rows with unseen genres": (
            spark_counts["prepare"]["counts"]["test_rows_with_unseen_genres"],
            duckdb_counts["prepare"]["test_rows_with_unseen_genres"],
        ),
    }
    for table in ("movies", "tags", "links"):
        pairs[f"{table} rows"] = (
            spark_counts["ingest"]["counts"][table]["rows_out"],
            duckdb_counts["ingest"][table]["rows_out"],
        )
    counts = {name: {"spark": a, "duckdb": b, "equal": a == b} for name, (a, b) in pairs.items()}
    same_keys = all(entry["spark"] == entry["duckdb"] for entry in comparison.values())
    results.put(
        "checksum",
        {
            "keys": comparison,
            "counts": counts,
            "all_equal": same_keys and all(entry["equal"] for entry in counts.values()),
        },
    )
    results.put("spark_stages_manifest", spark_counts)
    logger.info("checksum: %s", results.data["checksum"])


def phase_explore(args: argparse.Namespace, results: Results) -> None:
    """Run the explore stage as a user runs it."""
    command = spark_submit_command(args, REPO / "jobs" / "explore.py")
    run_measured(args, "explore", command, results)


def phase_index(args: argparse.Namespace, results: Results) -> None:
    """Run the index stage as a user runs it."""
    run_measured(args, "index", spark_submit_command(args, REPO / "jobs" / "index.py"), results)


def phase_als(args: argparse.Namespace, results: Results) -> None:
    """Run the ALS stage as a user runs it and store its fit times from als.json."""
    run_measured(args, "als", spark_submit_command(args, REPO / "jobs" / "als.py"), results)
    summary = json.loads((Path(args.reports) / args.dataset / "als.json").read_text())
    keys = ("best_rank", "best_reg_param", "max_iter", "blocks", "fit_seconds", "grid_seconds")
    figures = {key: summary[key] for key in keys}
    figures["grid"] = summary["grid"]
    figures["validation_rmse"] = summary["best_validation_rmse"]
    figures["test_rmse"] = summary["test_rmse"]
    figures["rows"] = summary["rows"]
    results.put("als", figures)


def phase_throughput(args: argparse.Namespace, results: Results) -> None:
    """Time the embedding model's and the reference recipe's training speed."""
    result_path = args.work_dir / "throughput_result.json"
    command = [
        sys.executable,
        str(BENCH / "throughput.py"),
        "--embedding-rows",
        str(args.throughput_rows),
        "--reference-rows",
        str(args.reference_rows),
        "--result",
        str(result_path),
    ]
    run_measured(args, "throughput", command, results)
    results.put("throughput", json.loads(result_path.read_text()))


def phase_compare(args: argparse.Namespace, results: Results) -> None:
    """Run the compare stage and store each model's test RMSE and training seconds."""
    command = [sys.executable, "-m", "lenspark.compare", "--models", args.models]
    run_measured(args, "compare", command, results)
    comparison = json.loads((Path(args.reports) / args.dataset / "comparison.json").read_text())
    models = {
        row["model"]: {"rmse": row["rmse"], "training_seconds": row["training_seconds"]}
        for row in comparison["models"]
    }
    embedding = comparison.get("details", {}).get("embedding", {})
    results.put(
        "compare",
        {
            "models": models,
            "skipped": comparison["skipped"],
            "embedding_best_epoch": embedding.get("best_epoch"),
            "embedding_epochs_run": len(embedding.get("history", [])),
            "train_rows": comparison["train_rows"],
            "test_rows": comparison["test_rows"],
        },
    )


def phase_report(args: argparse.Namespace, results: Results) -> None:
    """Write the Markdown page and the plot from the stored figures."""
    from report_page import write_report

    write_report(results.data, args, Path(args.output), Path(args.plot))


PHASE_FUNCTIONS = {
    "spark-stages": phase_spark_stages,
    "duckdb": phase_duckdb,
    "checksum": phase_checksum,
    "spark-session": phase_spark_session,
    "explore": phase_explore,
    "index": phase_index,
    "als": phase_als,
    "throughput": phase_throughput,
    "compare": phase_compare,
    "report": phase_report,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the selected phases in order and return the exit code."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args = parse_args(argv)
    os.chdir(REPO)
    results = Results(args.work_dir / "results.json")
    settings = results.data.get("settings", {})
    settings.update(
        {
            "spark_submit_args": args.spark_submit_args,
            "spark_master": args.spark_master,
            "dataset": args.dataset,
            "movielens_dir": args.movielens_dir,
            "models": args.models,
            "command": args.command,
        }
    )
    results.put("settings", settings)
    for phase in args.phase_list:
        logger.info("phase %s started", phase)
        PHASE_FUNCTIONS[phase](args, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
