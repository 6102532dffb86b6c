"""Tests of the ranking metrics on hand-computed examples."""

import math

import numpy as np
import pytest

from lenspark import ranking


def test_top_k_skips_excluded_and_breaks_ties_by_index():
    scores = np.array([0.5, 0.9, 0.9, 0.1, 0.7])
    ranked = ranking.top_k(scores, excluded=np.array([1]), k=3)
    assert ranked.tolist() == [2, 4, 0]


def test_top_k_returns_fewer_when_candidates_run_out():
    ranked = ranking.top_k(np.array([0.3, 0.2]), excluded=np.array([0]), k=5)
    assert ranked.tolist() == [1]


def test_user_metrics_hand_computed():
    # Ranked list (k = 5): movies 10, 20, 30, 40, 50; relevant: 20, 50, 60.
    # Hits at ranks 2 and 5, so precision@5 = 2/5 = 0.4 and recall@5 = 2/3.
    # DCG = 1/log2(3) + 1/log2(6) = 0.63093 + 0.38685 = 1.01778.
    # Ideal: 3 hits at ranks 1..3, IDCG = 1 + 0.63093 + 0.5 = 2.13093.
    # nDCG@5 = 1.01778 / 2.13093 = 0.47762.
    precision, recall, ndcg = ranking.user_metrics(
        np.array([10, 20, 30, 40, 50]), np.array([20, 50, 60]), k=5
    )
    assert precision == pytest.approx(0.4)
    assert recall == pytest.approx(2 / 3)
    assert ndcg == pytest.approx(0.47762, abs=1e-5)


def test_user_metrics_perfect_and_empty_lists():
    perfect = ranking.user_metrics(np.array([7, 8]), np.array([8, 7]), k=2)
    assert perfect == pytest.approx((1.0, 1.0, 1.0))
    nothing = ranking.user_metrics(np.array([], dtype=np.int64), np.array([3]), k=2)
    assert nothing == (0.0, 0.0, 0.0)


def test_relevant_by_user_keeps_ratings_of_four_and_more():
    relevant = ranking.relevant_by_user(
        user_index=np.array([0, 0, 1, 2, 3]),
        movie_index=np.array([5, 6, 5, 1, 2]),
        rating=np.array([4.0, 3.5, 3.0, 5.0, 4.5]),
        num_users=3,
    )
    # User 1 has no rating of 4 or more; user index 3 is the OOV user.
    assert sorted(relevant) == [0, 2]
    assert relevant[0].tolist() == [5]
    assert relevant[2].tolist() == [1]


def test_evaluate_ranking_averages_users_and_excludes_train():
    # Two users, four movies. Scores rank movies 0 > 1 > 2 > 3 for both users.
    # User 0 rated movie 0 in train, so its list is [1, 2]; relevant {2}: hit at rank 2,
    #   precision@2 = 0.5, recall@2 = 1, nDCG@2 = (1/log2(3)) / 1 = 0.63093.
    # User 1 rated nothing in train, so its list is [0, 1]; relevant {0, 3}: hit at rank 1,
    #   precision@2 = 0.5, recall@2 = 0.5, nDCG@2 = 1 / (1 + 1/log2(3)) = 0.61315.
    # Means: precision 0.5, recall 0.75, nDCG (0.63093 + 0.61315) / 2 = 0.62204.
    rated = ranking.group_by_user(np.array([0]), np.array([0]), num_users=2)
    relevant = {0: np.array([2]), 1: np.array([0, 3])}

    def score_users(users):
        return np.tile(np.array([4.0, 3.0, 2.0, 1.0]), (users.size, 1))

    metrics = ranking.evaluate_ranking(score_users, [0, 1], relevant, rated, k=2)
    assert metrics["precision_at_2"] == pytest.approx(0.5)
    assert metrics["recall_at_2"] == pytest.approx(0.75)
    expected_ndcg = (1 / math.log2(3) + 1 / (1 + 1 / math.log2(3))) / 2
    assert metrics["ndcg_at_2"] == pytest.approx(expected_ndcg)
    assert metrics["ndcg_at_2"] == pytest.approx(0.62204, abs=1e-5)


def test_sample_users_is_seeded_and_bounded():
    users = list(range(100))
    first, sampled = ranking.sample_users(users, 10, seed=7)
    second, _ = ranking.sample_users(users, 10, seed=7)
    assert sampled
    assert len(first) == 10
    assert first == second
    assert first == sorted(first)
    everyone, sampled_all = ranking.sample_users([3, 1, 2], 10, seed=7)
    assert everyone == [1, 2, 3]
    assert not sampled_all
