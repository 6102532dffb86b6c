"""Logging set-up shared by the jobs and the console entry points."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: int = logging.INFO) -> None:
    """Send lenspark's log records to standard error with timestamps."""
    logging.basicConfig(level=level, format=LOG_FORMAT, datefmt="%H:%M:%S")
    # py4j logs every gateway call at INFO.
    logging.getLogger("py4j").setLevel(logging.WARNING)


@contextmanager
def timed(logger: logging.Logger, stage: str, dataset: str) -> Iterator[dict[str, float]]:
    """Log a stage's start and end; the yielded dict gets the elapsed ``seconds``."""
    logger.info("%s started on dataset %s", stage, dataset)
    clock = {"start": time.perf_counter(), "seconds": 0.0}
    try:
        yield clock
    finally:
        clock["seconds"] = time.perf_counter() - clock["start"]
        logger.info("%s finished in %.1f s", stage, clock["seconds"])
