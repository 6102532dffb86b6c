"""The run configuration: command-line arguments with environment-variable defaults.

Spark's own settings (master, memory, partitions) never come from here: they come
from spark-submit and the properties files.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Sequence

from lenspark.errors import ConfigError

DEFAULT_DATASET = "ml-latest-small"
DEFAULT_SEED = 1234
DEFAULT_TRAIN_PERCENT = 80
SPLITS = ("hash", "temporal")
GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens"


@dataclasses.dataclass(frozen=True)
class Config:
    """Settings shared by every stage of one run."""

    dataset: str = DEFAULT_DATASET
    warehouse: str = "warehouse"
    reports: str = "reports"
    movielens_dir: str | None = None
    data_dir: str = "data"
    base_url: str = GROUPLENS_URL
    seed: int = DEFAULT_SEED
    train_percent: int = DEFAULT_TRAIN_PERCENT
    epochs: int = 20
    batch_size: int = 32
    max_reject_rate: float = 0.001
    split: str = "hash"
    validation_percent: int = 10
    models: str = "auto"
    top_n: int = 10
    ranking_users: int = 10_000
    checkpoint_dir: str = "checkpoints"

    def __post_init__(self) -> None:
        if not 0 < self.train_percent < 100:
            raise ConfigError(f"--train-percent must be between 1 and 99, got {self.train_percent}")
        if self.epochs < 1:
            raise ConfigError(f"--epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.split not in SPLITS:
            raise ConfigError(f"--split must be one of {', '.join(SPLITS)}, got {self.split!r}")
        if not 0 <= self.validation_percent < self.train_percent:
            raise ConfigError(
                f"--validation-percent must be between 0 and --train-percent "
                f"({self.train_percent}), got {self.validation_percent}"
            )
        if self.top_n < 1:
            raise ConfigError(f"--top-n must be at least 1, got {self.top_n}")
        if self.ranking_users < 1:
            raise ConfigError(f"--ranking-users must be at least 1, got {self.ranking_users}")
        if not 0.0 <= self.max_reject_rate <= 1.0:
            raise ConfigError(
                f"--max-reject-rate must be between 0 and 1, got {self.max_reject_rate}"
            )
        if not self.dataset or "/" in self.dataset:
            raise ConfigError(
                f"--dataset must be a release name such as ml-latest-small, got {self.dataset!r}"
            )

    @property
    def report_dir(self) -> str:
        """Folder or URI of this dataset's reports."""
        return f"{self.reports.rstrip('/')}/{self.dataset}"


# From this many fit rows on (about 1.4M ratings with the default split, so ml-20m and every
# larger release), the model stages use their large-data settings: a smaller ALS grid and
# faster Keras settings.
LARGE_FIT_ROWS = 1_000_000


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(
            f"environment variable {name} must be an integer, got {value!r}"
        ) from None


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    if value in (None, ""):
        return default
    try:
        return float(value)
    except ValueError:
        raise ConfigError(f"environment variable {name} must be a number, got {value!r}") from None


def build_parser(description: str, *, training: bool = False) -> argparse.ArgumentParser:
    """Build a parser with the options every stage shares; ``training`` adds epochs and batch."""
    parser = argparse.ArgumentParser(
        description=description,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    env = os.environ
    parser.add_argument(
        "--dataset",
        default=env.get("DATASET") or DEFAULT_DATASET,
        help="MovieLens release name (env DATASET)",
    )
    parser.add_argument(
        "--warehouse",
        default=env.get("WAREHOUSE") or "warehouse",
        help="root of the Parquet tables: a folder or an s3a:// URI (env WAREHOUSE)",
    )
    parser.add_argument(
        "--reports",
        default=env.get("REPORTS") or "reports",
        help="root of the reports, plots and metrics: a folder or an s3:// URI (env REPORTS)",
    )
    parser.add_argument(
        "--movielens-dir",
        default=env.get("MOVIELENS_DIR") or None,
        help="an unpacked MovieLens folder to read instead of downloading (env MOVIELENS_DIR)",
    )
    parser.add_argument(
        "--data-dir",
        default=env.get("DATA_DIR") or "data",
        help="download cache for the MovieLens zips (env DATA_DIR)",
    )
    parser.add_argument(
        "--base-url",
        default=env.get("MOVIELENS_URL") or GROUPLENS_URL,
        help="where <dataset>.zip and <dataset>.zip.md5 are downloaded from (env MOVIELENS_URL)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=_env_int("SEED", DEFAULT_SEED),
        help="seed of the train/test split and of model training (env SEED)",
    )
    parser.add_argument(
        "--train-percent",
        type=int,
        default=_env_int("TRAIN_PERCENT", DEFAULT_TRAIN_PERCENT),
        help="share of ratings that go to the training set, in percent (env TRAIN_PERCENT)",
    )
    parser.add_argument(
        "--max-reject-rate",
        type=float,
        default=_env_float("MAX_REJECT_RATE", 0.001),
        help="share of invalid input rows above which a stage fails, 0..1 (env MAX_REJECT_RATE)",
    )
    parser.add_argument(
        "--split",
        choices=SPLITS,
        default=env.get("SPLIT") or "hash",
        help="hash: by md5 of (userId, movieId, seed); temporal: each user's latest ratings "
        "go to test (env SPLIT)",
    )
    parser.add_argument(
        "--validation-percent",
        type=int,
        default=_env_int("VALIDATION_PERCENT", 10),
        help="share of all ratings carved from train for early stopping and model selection, "
        "in percent (env VALIDATION_PERCENT)",
    )
    parser.add_argument(
        "--models",
        default=env.get("MODELS") or "auto",
        help="comma-separated models to train and compare, or auto for the dataset's default "
        "(env MODELS)",
    )
    parser.add_argument(
        "--top-n",
        type=int,
        default=_env_int("N", 10),
        help="recommendations per user (env N)",
    )
    parser.add_argument(
        "--ranking-users",
        type=int,
        default=_env_int("RANKING_USERS", 10_000),
        help="maximum users scored by the ranking metrics; a seeded sample above that "
        "(env RANKING_USERS)",
    )
    if training:
        parser.add_argument(
            "--checkpoint-dir",
            default=env.get("CHECKPOINT_DIR") or "checkpoints",
            help="local folder where training saves a backup after each epoch, so that a "
            "killed run resumes (env CHECKPOINT_DIR)",
        )
        parser.add_argument(
            "--epochs",
            type=int,
            default=_env_int("EPOCHS", 20),
            help="training epochs (env EPOCHS)",
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=_env_int("BATCH_SIZE", 32),
            help="training batch size in rows (env BATCH_SIZE)",
        )
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    """Build the immutable config from parsed arguments."""
    fields = {field.name for field in dataclasses.fields(Config)}
    values = {key: value for key, value in vars(args).items() if key in fields}
    return Config(**values)


def parse_config(
    description: str, argv: Sequence[str] | None = None, *, training: bool = False
) -> Config:
    """Parse ``argv`` (default: ``sys.argv``) into a Config."""
    parser = build_parser(description, training=training)
    return config_from_args(parser.parse_args(argv))
