"""BENCHMARKS.md and the stage-time plot, written from the figures of ``bench/run_bench.py``."""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
from pathlib import Path

import psutil
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

GIB = 1 << 30
# Targets of the 20M benchmark.
MAX_ETL_RATIO = 3.0
MIN_EMBEDDING_SAMPLES_PER_SECOND = 400_000
MIN_SPEED_RATIO = 10.0
MAX_RMSE_ABOVE_FLOOR = 0.05
MAX_PROCESS_RSS_GIB = 8.0

RUN_LABELS = {
    "ingest": "ingest (spark-submit)",
    "merge": "merge (spark-submit)",
    "prepare": "prepare (spark-submit)",
    "duckdb": "DuckDB ingest + merge + prepare",
    "spark_session": "Spark ingest + merge + prepare, one session",
    "explore": "explore (spark-submit)",
    "index": "index (spark-submit)",
    "als": "ALS grid + refit (spark-submit)",
    "throughput": "training speed runs (Python)",
    "compare": "compare (Python)",
}


def cpu_model() -> str:
    """Return the CPU model name from /proc/cpuinfo, or the platform's processor string."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        match = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.M)
        if match:
            return match.group(1).strip()
    return platform.processor() or "unknown"


def rmse_floor(readme: Path) -> float | None:
    """Return the RMSE floor that lenspark.synth printed in the release's README.txt."""
    if not readme.is_file():
        return None
    match = re.search(r"RMSE floor.*?:\s*(\d+\.\d+)", readme.read_text(), re.S)
    return float(match.group(1)) if match else None


def _verdict(met: bool | None) -> str:
    if met is None:
        return "not measured"
    return "met" if met else "NOT met"


def _number(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def plot_stage_times(runs: dict, dataset: str, path: Path) -> None:
    """Write a horizontal bar chart of every measured run's wall time as a PNG file."""
    names = [name for name in RUN_LABELS if name in runs]
    labels = [RUN_LABELS[name] for name in names]
    seconds = [runs[name]["seconds"] for name in names]
    figure = Figure(figsize=(9, 0.5 * len(names) + 1.5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    bars = axes.barh(labels, seconds, color="#4878a8")
    axes.bar_label(bars, labels=[f"{value:.0f} s" for value in seconds], padding=3)
    axes.invert_yaxis()
    axes.set_xlabel("wall time (s)")
    axes.set_title(f"lenspark stage wall times on {dataset}, {os.cpu_count()} cores")
    axes.set_xlim(0, max(seconds, default=1) * 1.18)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=100)


def _targets(data: dict, floor: float | None) -> tuple[list[list[str]], dict]:
    runs = data.get("runs", {})
    figures: dict = {}
    rows = []

    spark_seconds = None
    if all(stage in runs for stage in ("ingest", "merge", "prepare")):
        spark_seconds = sum(runs[stage]["seconds"] for stage in ("ingest", "merge", "prepare"))
    duckdb_seconds = runs.get("duckdb", {}).get("seconds")
    session_seconds = runs.get("spark_session", {}).get("seconds")
    ratio = spark_seconds / duckdb_seconds if spark_seconds and duckdb_seconds else None
    session_ratio = session_seconds / duckdb_seconds if session_seconds and duckdb_seconds else None
    figures.update(
        spark_seconds=spark_seconds,
        duckdb_seconds=duckdb_seconds,
        session_seconds=session_seconds,
        etl_ratio=ratio,
        session_ratio=session_ratio,
    )
    rows.append(
        [
            f"Spark ETL as run (3 spark-submit) at most {MAX_ETL_RATIO:g} x DuckDB",
            f"{_number(spark_seconds)} s / {_number(duckdb_seconds)} s = {_number(ratio, 2)} x",
            _verdict(None if ratio is None else ratio <= MAX_ETL_RATIO),
        ]
    )
    rows.append(
        [
            "(for comparison) Spark ETL in one session against DuckDB",
            f"{_number(session_seconds)} s / {_number(duckdb_seconds)} s = "
            f"{_number(session_ratio, 2)} x",
            "no target",
        ]
    )

    throughput = data.get("throughput", {})
    embedding_speed = throughput.get("embedding", {}).get("samples_per_second")
    reference_speed = throughput.get("reference", {}).get("samples_per_second")
    speed_ratio = throughput.get("ratio")
    rows.append(
        [
            f"embedding model at least {MIN_EMBEDDING_SAMPLES_PER_SECOND:,} samples/s",
            f"{_number(embedding_speed, 0)} samples/s",
            _verdict(
                None
                if embedding_speed is None
                else embedding_speed >= MIN_EMBEDDING_SAMPLES_PER_SECOND
            ),
        ]
    )
    rows.append(
        [
            f"embedding model at least {MIN_SPEED_RATIO:g} x the reference recipe (batch 32)",
            f"{_number(embedding_speed, 0)} / {_number(reference_speed, 0)} samples/s = "
            f"{_number(speed_ratio, 2)} x",
            _verdict(None if speed_ratio is None else speed_ratio >= MIN_SPEED_RATIO),
        ]
    )

    models = data.get("compare", {}).get("models", {})
    for name in ("embedding", "bias", "als"):
        rmse = models.get(name, {}).get("rmse")
        if name == "als" and rmse is None:
            # The ALS stage's own test RMSE, computed by Spark with the same fallback rule.
            rmse = data.get("als", {}).get("test_rmse")
        if name != "embedding" and rmse is None:
            continue
        above = rmse / floor - 1 if rmse is not None and floor else None
        if name == "embedding":
            figures.update(rmse=rmse, floor=floor, rmse_above_floor=above)
            target = (
                f"embedding test RMSE within {MAX_RMSE_ABOVE_FLOOR:.0%} of the generator's floor"
            )
        else:
            target = f"(for comparison) {name} test RMSE against the same floor"
        verdict = _verdict(None if above is None else above <= MAX_RMSE_ABOVE_FLOOR)
        rows.append(
            [
                target,
                f"RMSE {_number(rmse, 4)} against floor {_number(floor, 4)}: "
                f"{'n/a' if above is None else f'{above:+.1%}'}",
                verdict if name == "embedding" else "no target",
            ]
        )

    peak = max((run["peak_process_rss_gib"] for run in runs.values()), default=None)
    figures["peak_process_rss_gib"] = peak
    rows.append(
        [
            f"no process above {MAX_PROCESS_RSS_GIB:g} GiB resident",
            f"largest process {_number(peak, 2)} GiB",
            _verdict(None if peak is None else peak <= MAX_PROCESS_RSS_GIB),
        ]
    )
    return rows, figures


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def spark_options(run: dict) -> str | None:
    """Return the extra spark-submit options of a run, or None for a run without Spark.

    Runs stored before the options had their own field are read from the command line,
    between the properties file and the script.
    """
    if "spark_submit_args" in run:
        return run["spark_submit_args"]
    words = run.get("command", "").split()
    if not words or not words[0].endswith("spark-submit") or "--properties-file" not in words:
        return None
    start = words.index("--properties-file") + 2
    return " ".join(words[start:-1])


def spark_settings_labels(runs: dict) -> dict[str, str]:
    """Name each distinct set of spark-submit options of the runs S1, S2, ... in run order."""
    labels: dict[str, str] = {}
    for name in RUN_LABELS:
        options = spark_options(runs[name]) if name in runs else None
        if options is not None and options not in labels:
            labels[options] = f"S{len(labels) + 1}"
    return labels


def _run_rows(runs: dict) -> list[list[str]]:
    settings = spark_settings_labels(runs)
    rows = []
    for name, label in RUN_LABELS.items():
        if name not in runs:
            continue
        run = runs[name]
        options = spark_options(run)
        rows.append(
            [
                label,
                settings.get(options, "-") if options is not None else "-",
                f"{run['seconds']:,.1f}",
                f"{run['peak_jvm_rss_gib']:.2f}" if run["peak_jvm_rss_gib"] else "-",
                f"{run['peak_python_rss_gib']:.2f}",
                f"{run['peak_process_rss_gib']:.2f}",
                f"{run['peak_tree_rss_gib']:.2f}",
                f"{run.get('load_average_before', 'n/a')} / {run.get('load_average_after', 'n/a')}",
                run["finished_at"],
            ]
        )
    return rows


def write_report(data: dict, args, output: Path, plot: Path) -> None:
    """Write ``output`` (Markdown) and ``plot`` (PNG) from the stored benchmark figures."""
    runs = data.get("runs", {})
    settings = data.get("settings", {})
    floor = rmse_floor(Path(args.movielens_dir) / "README.txt")
    target_rows, figures = _targets(data, floor)
    if runs:
        plot_stage_times(runs, args.dataset, plot)

    lines = [
        "# Benchmarks",
        "",
        f"lenspark on `{args.dataset}` (the CSV files in `{settings.get('movielens_dir')}`), "
        "measured by `bench/run_bench.py`, which `make bench` runs. The page and the plot are "
        "rewritten by each run.",
        "",
        f"- Date of this page: {dt.datetime.now(dt.UTC).isoformat(timespec='minutes')}; each "
        "measured run's end time is in the last column of the stage table.",
        f"- Command: `{settings.get('command')}`",
        f"- Spark: `spark-submit --master {settings.get('spark_master')} --properties-file "
        "spark-defaults.conf` with these extra options per run (column Spark options below):",
        *[f"  - {label}: `{options}`" for options, label in spark_settings_labels(runs).items()],
        f"- Machine: {os.cpu_count()} cores ({cpu_model()}), "
        f"{psutil.virtual_memory().total / GIB:.1f} GiB memory, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}",
        "",
        "## Targets",
        "",
        *_table(["target", "measured", "verdict"], target_rows),
        "",
        "## Stage wall times and peak memory",
        "",
        "Peak resident set size (RSS) in GiB, sampled every 0.25 s over the process tree of "
        "each command, so a shorter spike can be missed. In local mode the executor runs "
        "inside the driver JVM, so the JVM column is both. The tree column is the sum over "
        "every process of the command at one instant. The load average (1 minute) before and "
        "after each run shows how busy the shared cores were: above the core count, other "
        "processes competed with the run for CPU time.",
        "",
        *_table(
            [
                "run",
                "Spark options",
                "wall time (s)",
                "JVM peak RSS (GiB)",
                "Python peak RSS (GiB)",
                "largest process (GiB)",
                "tree (GiB)",
                "load before / after",
                "finished (UTC)",
            ],
            _run_rows(runs),
        ),
        "",
        f"![Wall time of each measured run]({os.path.relpath(plot, output.parent)})",
        "",
    ]
    lines += _etl_section(data, figures)
    lines += _training_section(data, figures)
    lines += _als_section(data)
    output.write_text("\n".join(lines).rstrip() + "\n")


def _etl_section(data: dict, figures: dict) -> list[str]:
    lines = ["## ETL: Spark against DuckDB", ""]
    duckdb = data.get("duckdb", {})
    if duckdb:
        stage_seconds = duckdb.get("seconds", {})
        lines.append(
            "DuckDB's own stage times inside its one process (s): "
            + ", ".join(f"{stage} {seconds:.1f}" for stage, seconds in stage_seconds.items())
            + ". The wall time above adds Python and DuckDB start-up."
        )
        lines.append("")
    spark_stages = data.get("spark_stages_manifest", {})
    if spark_stages:
        lines.append(
            "Spark's stage times inside each job, from the manifests (s): "
            + ", ".join(f"{stage} {entry['seconds']:.1f}" for stage, entry in spark_stages.items())
            + ". The difference to the wall times is JVM start-up, session set-up and the "
            "preflight checks."
        )
        lines.append("")
    session = data.get("spark_session_manifest", {})
    if session:
        lines.append(
            "The same stages in one Spark session, from its manifests (s): "
            + ", ".join(f"{stage} {entry['seconds']:.1f}" for stage, entry in session.items())
            + "."
        )
        lines.append("")
    checksum = data.get("checksum")
    if checksum:
        lines.append(
            "Both write the same tables as snappy Parquet. Row counts and the checksum of the "
            "train and test keys (sum modulo 2^64 of a 64-bit mix of each (userid, movieid)):"
        )
        lines.append("")
        rows = [
            [name, f"{entry['spark']:,}", f"{entry['duckdb']:,}", "yes" if entry["equal"] else "NO"]
            for name, entry in checksum["counts"].items()
        ]
        for table, entry in checksum["keys"].items():
            spark, duck = entry["spark"], entry["duckdb"]
            rows.append(
                [
                    f"{table} rows, key checksum",
                    f"{spark['rows']:,}, `{spark['checksum']}`",
                    f"{duck['rows']:,}, `{duck['checksum']}`",
                    "yes" if spark == duck else "NO",
                ]
            )
        lines += _table(["figure", "Spark", "DuckDB", "equal"], rows)
        lines.append("")
    return lines


def _training_section(data: dict, figures: dict) -> list[str]:
    lines = ["## Training", ""]
    throughput = data.get("throughput", {})
    if throughput:
        embedding, reference = throughput["embedding"], throughput["reference"]
        settings = embedding.get("settings", {})
        described = ", ".join(f"{name} {value}" for name, value in settings.items())
        lines += [
            f"- Embedding model (the compare stage's rating settings for this size: "
            f"{described}), fed from the indexed_fit Parquet "
            f"table: {embedding['samples_per_second']:,.0f} samples/s over "
            f"{embedding['timed_rows']:,} rows in {embedding['timed_seconds']:.1f} s, after "
            "20 warm-up batches.",
            f"- Reference recipe (Dense 32, Dense 10, softmax; batch 32) on the first "
            f"{reference['timed_rows'] + 20 * 32:,} train rows: "
            f"{reference['samples_per_second']:,.0f} samples/s over {reference['timed_rows']:,} "
            f"rows in {reference['timed_seconds']:.1f} s.",
            f"- Ratio: {throughput['ratio']:.2f}.",
        ]
        # An estimate, because a real epoch also runs the validation pass and the refit.
        epoch_seconds = embedding["fit_rows"] / embedding["samples_per_second"]
        lines.append(
            f"- At this speed one pass over the {embedding['fit_rows']:,} fit rows takes about "
            f"{epoch_seconds:,.0f} s (an estimate from the timed rows, without the "
            "validation pass)."
        )
    compare = data.get("compare", {})
    if compare:
        models = compare["models"]
        lines += [
            "",
            f"Test RMSE on {compare['test_rows']:,} test rows after training on "
            f"{compare['train_rows']:,} rows, against the RMSE floor "
            f"{_number(figures.get('floor'), 4)} printed by the generator "
            "(README.txt of the release):",
            "",
        ]
        rows = [
            [
                name,
                _number(entry["rmse"], 4),
                _number(entry["training_seconds"], 1),
            ]
            for name, entry in models.items()
        ]
        lines += _table(["model", "test RMSE (stars)", "training time (s)"], rows)
        lines.append("")
        if "embedding" in models:
            lines.append(
                f"The embedding model stopped after {compare.get('embedding_epochs_run')} "
                f"epochs (best epoch {compare.get('embedding_best_epoch')}) and was refitted on "
                "fit plus validation rows for the best epoch count."
            )
        else:
            lines.append("The embedding model was not among the models of this compare run.")
        if compare.get("skipped"):
            lines.append("")
            lines.append(
                "Skipped: "
                + "; ".join(f"{entry['model']}: {entry['reason']}" for entry in compare["skipped"])
            )
    lines.append("")
    return lines


def _als_section(data: dict) -> list[str]:
    als = data.get("als")
    if not als:
        return []
    lines = [
        "## ALS",
        "",
        f"Spark MLlib ALS, {als['max_iter']} iterations, {als['blocks']} user and item blocks. "
        "Each grid point is fitted on the fit rows and scored on the validation rows; the best "
        f"is refitted on all {als['rows']:,} train rows.",
        "",
    ]
    rows = [
        [
            str(point["rank"]),
            f"{point['reg_param']:g}",
            _number(point["seconds"], 1),
            _number(point["validation_rmse"], 4),
        ]
        for point in als["grid"]
    ]
    lines += _table(["rank", "regParam", "fit time (s)", "validation RMSE"], rows)
    lines += [
        "",
        f"- grid: {als['grid_seconds']:.1f} s in all;",
        f"- refit of rank {als['best_rank']}, regParam {als['best_reg_param']:g}: "
        f"{als['fit_seconds']:.1f} s; test RMSE {als['test_rmse']:.4f}.",
        "",
    ]
    return lines
