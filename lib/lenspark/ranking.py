"""Ranking metrics on the test split: precision@k, recall@k and nDCG@k.

For each evaluated user the candidates are the indexed movies (0..M-1) that the user
did not rate in train (fit plus validation rows). A test rating of 4.0 or more is
relevant. Only users with at least one relevant test rating are evaluated, and above
``max_users`` such users a seeded random sample of them. A relevant test movie that is
absent from train cannot be ranked but still counts in the denominator of recall.
Relevance is binary, so DCG@k = sum over hits at rank i (1-based) of 1 / log2(i + 1).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

import numpy as np

logger = logging.getLogger(__name__)

RELEVANT_RATING = 4.0
# Users scored at once; a block's score matrix has this many rows times M columns.
USER_BLOCK = 512

ScoreFunction = Callable[[np.ndarray], np.ndarray]


@dataclasses.dataclass(frozen=True)
class RatedMovies:
    """Movie indices per user index in CSR form: row u is movies[offsets[u]:offsets[u + 1]]."""

    offsets: np.ndarray
    movies: np.ndarray

    def of(self, user: int) -> np.ndarray:
        """Return the movie indices of user index ``user``."""
        return self.movies[self.offsets[user] : self.offsets[user + 1]]


def group_by_user(user_index: np.ndarray, movie_index: np.ndarray, num_users: int) -> RatedMovies:
    """Group (user, movie) rows into RatedMovies for user indices 0..num_users (OOV included)."""
    users = np.asarray(user_index, dtype=np.int64)
    order = np.lexsort((movie_index, users))
    counts = np.bincount(users, minlength=num_users + 1)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    return RatedMovies(offsets=offsets, movies=np.asarray(movie_index, dtype=np.int64)[order])


def top_k(scores: np.ndarray, excluded: np.ndarray, k: int) -> np.ndarray:
    """Return the indices of the ``k`` highest scores, skipping indices in ``excluded``.

    Ties go to the lower index, so the result does not depend on the sort algorithm.
    Returns fewer than ``k`` indices when fewer candidates remain.
    """
    candidate_scores = np.asarray(scores, dtype=np.float64).copy()
    candidate_scores[excluded] = -np.inf
    available = int(np.isfinite(candidate_scores).sum())
    count = min(k, available)
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    # Keep every index scoring at least the k-th highest score, ties included, then sort
    # them by descending score and ascending index (lexsort uses the last key first).
    threshold = np.partition(candidate_scores, candidate_scores.size - count)[-count]
    shortlist = np.flatnonzero(candidate_scores >= threshold)
    order = np.lexsort((shortlist, -candidate_scores[shortlist]))
    return shortlist[order[:count]]


def user_metrics(ranked: np.ndarray, relevant: np.ndarray, k: int) -> tuple[float, float, float]:
    """Return (precision@k, recall@k, nDCG@k) of one ranked list against its relevant set.

    ``relevant`` must not be empty. Precision divides the hits by k even when the list
    is shorter. The ideal DCG places min(k, |relevant|) hits at the top ranks.
    """
    hits = np.isin(ranked[:k], relevant)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = float(np.sum(discounts[: hits.size][hits]))
    ideal = float(np.sum(discounts[: min(k, relevant.size)]))
    hit_count = int(hits.sum())
    return hit_count / k, hit_count / relevant.size, dcg / ideal


def relevant_by_user(
    user_index: np.ndarray, movie_index: np.ndarray, rating: np.ndarray, num_users: int
) -> dict[int, np.ndarray]:
    """Return each indexed user's relevant test movies (rating >= 4.0), for users that have any.

    OOV test users are left out because no model has a ranking for them.
    """
    users = np.asarray(user_index, dtype=np.int64)
    keep = (np.asarray(rating) >= RELEVANT_RATING) & (users < num_users)
    grouped = group_by_user(users[keep], np.asarray(movie_index)[keep], num_users)
    return {
        int(user): grouped.of(int(user))
        for user in np.flatnonzero(np.diff(grouped.offsets)[:num_users])
    }


def sample_users(users: list[int], max_users: int, seed: int) -> tuple[list[int], bool]:
    """Return at most ``max_users`` of ``users`` in ascending order and whether it sampled.

    Above ``max_users`` a uniform sample without replacement is drawn with ``seed``.
    """
    ordered = sorted(users)
    if len(ordered) <= max_users:
        return ordered, False
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(ordered), size=max_users, replace=False)
    return [ordered[i] for i in np.sort(chosen)], True


def evaluate_ranking(
    score_users: ScoreFunction,
    users: list[int],
    relevant: dict[int, np.ndarray],
    rated_in_train: RatedMovies,
    k: int,
) -> dict[str, float]:
    """Average precision@k, recall@k and nDCG@k over ``users``.

    ``score_users`` maps an array of user indices to scores of shape (users, M), and
    every user in ``users`` must have an entry in ``relevant``.
    """
    totals = np.zeros(3)
    for start in range(0, len(users), USER_BLOCK):
        block = np.asarray(users[start : start + USER_BLOCK], dtype=np.int64)
        scores = score_users(block)
        for row, user in enumerate(block):
            ranked = top_k(scores[row], rated_in_train.of(int(user)), k)
            totals += user_metrics(ranked, relevant[int(user)], k)
    count = max(len(users), 1)
    precision, recall, ndcg = totals / count
    return {
        f"precision_at_{k}": float(precision),
        f"recall_at_{k}": float(recall),
        f"ndcg_at_{k}": float(ndcg),
    }
