"""Find the folder of MovieLens CSV files that the ingest stage reads."""

from __future__ import annotations

import logging
from pathlib import Path

from lenspark import storage
from lenspark.config import Config
from lenspark.download import fetch_dataset
from lenspark.errors import DataSourceError, InputFormatError

logger = logging.getLogger(__name__)

RATINGS_FILE = "ratings.csv"

# Rating files of the MovieLens releases that came before the CSV format, with the names of
# those releases and how their fields are separated.
OLDER_FORMATS = (
    ("u.data", "ml-100k", "tab-separated"),
    ("ratings.dat", "ml-1m and ml-10m", "'::'-separated"),
)


def locate_dataset(config: Config) -> str:
    """Return the folder or URI that contains the MovieLens CSV files of ``config.dataset``.

    The first source that is set or present wins: ``config.movielens_dir`` (MOVIELENS_DIR),
    then a cached download under ``config.data_dir``, then a download from
    ``config.base_url`` (see ``fetch_dataset``). An s3:// or s3a:// MOVIELENS_DIR is returned
    as is. A local folder is returned as an absolute path.

    Raises DataSourceError when MOVIELENS_DIR is not a folder with ratings.csv or the download
    fails, and InputFormatError when the folder contains an older, non-CSV MovieLens release.
    """
    if config.movielens_dir:
        if storage.is_s3(config.movielens_dir):
            # NOTE: a bucket folder is not checked here, so a missing ratings.csv is only
            # reported when the ingest stage reads it.
            logger.info("Reading MovieLens CSV files from MOVIELENS_DIR %s", config.movielens_dir)
            return config.movielens_dir
        folder = Path(config.movielens_dir)
        _check_movielens_dir(folder, config)
        logger.info("Reading MovieLens CSV files from MOVIELENS_DIR %s", folder)
    else:
        folder = fetch_dataset(config.dataset, config.data_dir, config.base_url)

    unsupported = detect_unsupported_format(folder)
    if unsupported is not None:
        raise InputFormatError(unsupported)
    if not (folder / RATINGS_FILE).is_file():
        raise DataSourceError(_missing_ratings_message(folder, config))
    return str(folder.absolute())


def detect_unsupported_format(folder: Path) -> str | None:
    """Return an error message if ``folder`` contains a pre-CSV MovieLens release, else None.

    A folder with ratings.csv is a CSV release even if older files sit next to it.
    """
    folder = Path(folder)
    if (folder / RATINGS_FILE).is_file():
        return None
    for rating_file, releases, separator in OLDER_FORMATS:
        if (folder / rating_file).is_file():
            return (
                f"{folder} contains {rating_file}, the {separator} rating file of the "
                f"{releases} releases. That format is not supported yet: lenspark reads only "
                f"the CSV releases ({RATINGS_FILE}, movies.csv, tags.csv, links.csv). Use one "
                f"of them, for example --dataset ml-latest-small or --dataset ml-25m."
            )
    return None


def _check_movielens_dir(folder: Path, config: Config) -> None:
    """Raise DataSourceError unless the local MOVIELENS_DIR is an existing folder."""
    fix = (
        f"Set MOVIELENS_DIR (or --movielens-dir) to an unpacked MovieLens folder that "
        f"contains {RATINGS_FILE}, or unset it to download {config.dataset} into "
        f"{config.data_dir}/."
    )
    if not folder.exists():
        raise DataSourceError(f"MOVIELENS_DIR is {folder}, which does not exist. {fix}")
    if folder.is_file() and folder.suffix == ".zip":
        raise DataSourceError(
            f"MOVIELENS_DIR is {folder}, which is a zip file, not a folder. Unzip it and set "
            f"MOVIELENS_DIR to the folder that contains {RATINGS_FILE}, or unset MOVIELENS_DIR "
            f"and copy the zip to {config.data_dir}/{config.dataset}.zip."
        )
    if not folder.is_dir():
        raise DataSourceError(f"MOVIELENS_DIR is {folder}, which is not a folder. {fix}")


def _missing_ratings_message(folder: Path, config: Config) -> str:
    message = f"{folder} contains no {RATINGS_FILE}, so it is not an unpacked MovieLens release."
    # A common slip is to point at the folder above the release, such as data/.
    nested = sorted(path.parent for path in folder.glob(f"*/{RATINGS_FILE}"))
    if nested:
        return f"{message} {nested[0]} contains one: set MOVIELENS_DIR to that folder."
    return (
        f"{message} Set MOVIELENS_DIR to the folder that contains {RATINGS_FILE}, or unset it "
        f"to download {config.dataset} into {config.data_dir}/."
    )
