"""The compare stage: train or load every selected model and score all of them on the same rows.

Rating metrics (RMSE, MAE, whole-star accuracy) use every row of ``indexed_test``. A
row whose user or movie is absent from train is scored by the model's fallback and
counted. Ranking metrics follow ``lenspark.ranking``. Outputs: ``comparison.json``, the
training-curve plots, one ``.npz`` file per factor model in the warehouse (read by the
recommend stage), the refreshed HTML report and the stage's manifest.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from lenspark import baselines, manifest, plots, ranking, report, storage
from lenspark import features as feature_tables
from lenspark.baselines import FactorModel
from lenspark.config import LARGE_FIT_ROWS, Config, parse_config
from lenspark.embedding import EmbeddingSettings, train_ranking_model, train_rating_model
from lenspark.errors import ConfigError, IncompleteTableError, InputFormatError, LensparkError
from lenspark.features import MovieFeatures, Ratings
from lenspark.logs import configure_logging, timed
from lenspark.train import report_uri

logger = logging.getLogger(__name__)

STAGE = "compare"
MODEL_FOLDER = "models"
COMPARISON_FILE = "comparison.json"
# Ranking metrics look at each model's first 10 recommendations, whatever N a user
# asks the recommend stage for, so that comparisons stay comparable.
RANKING_CUTOFF = 10
SMALL_DATASET = "ml-latest-small"
MODEL_NAMES = (
    "reference",
    "embedding",
    "ranking",
    "bias",
    "global_mean",
    "majority",
    "popularity",
    "als",
)
CURVE_PLOTS = {"embedding": "embedding_curves.png", "ranking": "ranking_curves.png"}
# Chosen on the ml-latest-small validation rows (hash split, seed 1234) among dimensions 4
# to 64, L2 0.02 to 0.2, learning rates 1e-3 to 4e-3 and batches of 1024 or 2048. One
# model of dimension 32 reached validation RMSE 0.862. Dimension 16 with per-user
# side-feature weights reached 0.856 to 0.863, depending on the seed, and the average of
# 3 such models with weight decay reached 0.855. Three members take 3 times as long.
RATING_SETTINGS = EmbeddingSettings(
    dimension=16, l2=0.0, weight_l2=3e-5, batch_size=1024, user_side_weights=True, members=3
)
# The ranking model learns from about 9 times more rows (each fit row plus 8 negatives), so it
# needs less shrinkage than the rating model. These values gave the best validation nDCG@10
# of the few settings tried on ml-latest-small.
RANKING_SETTINGS = EmbeddingSettings(
    l2=1e-3, bias_l2=1e-4, learning_rate=5e-3, batch_size=4096, max_epochs=15, negatives=8
)
# From LARGE_FIT_ROWS fit rows on, the rating and ranking models use the large-data
# settings below: big batches, which keep 2 cores busy, and no averaged members or
# per-user side weights, which would multiply the training time.
# Chosen on the ml-20m-synthetic validation rows (hash split, seed 1234) in 4 to 8 epochs
# per setting. A penalty on the looked-up rows of each batch (l2) either overfitted after 2
# epochs (0.02) or kept the vectors near zero (0.1 and above). A small decay of every row
# at every step works better. Over one epoch it adds weight_l2 * fit rows (about 14 at
# 14M rows) times the squared norm of each vector. That is the same prior whatever the
# number of ratings of a user or movie. A constant learning rate stalled at validation RMSE 0.741;
# this rate, lowered by 40 percent per epoch, reached 0.737 in 4 epochs.
LARGE_RATING_SETTINGS = EmbeddingSettings(
    dimension=16,
    l2=0.0,
    weight_l2=1e-6,
    bias_l2=0.0,
    learning_rate=8e-3,
    learning_rate_decay=0.6,
    batch_size=16384,
    max_epochs=10,
    patience=2,
)
# Each fit row plus 4 negatives: about 70M pairs per epoch at 20M ratings.
LARGE_RANKING_SETTINGS = EmbeddingSettings(
    l2=1e-3,
    bias_l2=1e-4,
    learning_rate=5e-3,
    batch_size=16384,
    max_epochs=4,
    patience=1,
    negatives=4,
)
# Rows per Keras predict call when the reference model ranks every movie for a user block.
REFERENCE_PREDICT_BATCH = 1 << 16


def selected_models(config: Config) -> list[str]:
    """Return the models named by ``config.models`` in MODEL_NAMES order.

    ``auto`` selects every model on ml-latest-small and all but the reference model on
    larger releases, where its batch-size-32 recipe would take hours. Raises
    ConfigError on an unknown name.
    """
    if config.models.strip() == "auto":
        if config.dataset == SMALL_DATASET:
            return list(MODEL_NAMES)
        return [name for name in MODEL_NAMES if name != "reference"]
    requested = [name.strip() for name in config.models.split(",") if name.strip()]
    unknown = sorted(set(requested) - set(MODEL_NAMES))
    if unknown or not requested:
        raise ConfigError(
            f"--models (env MODELS) got {config.models!r}, with unknown names {unknown}. "
            f"Use auto or a comma-separated list of {', '.join(MODEL_NAMES)}."
        )
    return [name for name in MODEL_NAMES if name in requested]


def settings_for(fit_rows: int) -> tuple[EmbeddingSettings, EmbeddingSettings]:
    """Return the (rating, ranking) model settings for a fit table of ``fit_rows`` rows."""
    if fit_rows >= LARGE_FIT_ROWS:
        return LARGE_RATING_SETTINGS, LARGE_RANKING_SETTINGS
    return RATING_SETTINGS, RANKING_SETTINGS


def model_folder(config: Config) -> str:
    """Folder of the compare stage's model files in the warehouse."""
    return storage.table_uri(config.warehouse, config.dataset, MODEL_FOLDER)


def comparison_uri(config: Config) -> str:
    """Location of comparison.json in the dataset's report folder."""
    return report_uri(config, COMPARISON_FILE)


@dataclasses.dataclass
class ModelRun:
    """Output of one model: test predictions, a ranking scorer and its training details."""

    name: str
    predictions: np.ndarray | None
    fallback_rows: int | None
    score_users: ranking.ScoreFunction | None
    training_seconds: float | None
    factors: FactorModel | None = None
    note: str = ""
    details: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Splits:
    """The indexed fit, validation and test rows with the index they refer to."""

    features: MovieFeatures
    fit: Ratings
    validation: Ratings
    test: Ratings

    @property
    def train(self) -> Ratings:
        """All train rows: fit plus validation."""
        return self.fit.concat(self.validation)


def rating_metrics(predictions: np.ndarray, test: Ratings) -> dict[str, float]:
    """Return RMSE and MAE in stars, and the accuracy of floor(prediction + 0.5) vs. the label."""
    error = predictions - test.rating.astype(np.float64)
    whole_stars = np.floor(predictions + 0.5).astype(np.int64)
    return {
        "rmse": float(np.sqrt(np.mean(error**2))),
        "mae": float(np.mean(np.abs(error))),
        "accuracy": float(np.mean(whole_stars == test.label)),
    }


def _factor_run(name: str, model: FactorModel, test: Ratings, seconds: float, **extra) -> ModelRun:
    result = ModelRun(
        name=name,
        predictions=model.predict(test.user_index, test.movie_index, test.movieid),
        fallback_rows=int(model.fallback_rows(test.user_index, test.movie_index).sum()),
        score_users=model.score_matrix,
        training_seconds=seconds,
        factors=model,
        **extra,
    )
    unseen_rows = int((model.unseen_slots(test.movie_index, test.movieid) >= 0).sum())
    if unseen_rows:
        result.details["unseen_movie_rows_scored_by_side_features"] = unseen_rows
    return result


def run_bias(splits: Splits) -> ModelRun:
    """Choose the bias shrinkage on the validation rows, then fit it on all train rows."""
    started = time.perf_counter()
    features, fit, validation = splits.features, splits.fit, splits.validation
    regularization, grid = baselines.choose_bias_regularization(
        fit.user_index,
        fit.movie_index,
        fit.rating,
        validation.user_index,
        validation.movie_index,
        validation.rating,
        features.num_users,
        features.num_movies,
    )
    train = splits.train
    model = baselines.fit_biases(
        train.user_index,
        train.movie_index,
        train.rating,
        features.num_users,
        features.num_movies,
        regularization,
    )
    seconds = time.perf_counter() - started
    details = {"regularization": regularization, "grid": grid}
    return _factor_run("bias", model, splits.test, seconds, details=details)


def run_global_mean(splits: Splits) -> ModelRun:
    """Predict the mean train rating everywhere; a constant does not rank."""
    started = time.perf_counter()
    train = splits.train
    model = baselines.global_mean_model(
        train.rating, splits.features.num_users, splits.features.num_movies
    )
    seconds = time.perf_counter() - started
    result = _factor_run("global_mean", model, splits.test, seconds)
    result.fallback_rows = 0
    result.score_users = None
    result.note = "a constant, so no ranking"
    return result


def run_majority(splits: Splits) -> ModelRun:
    """Predict the most frequent whole-star train label as the rating of every test row."""
    started = time.perf_counter()
    label = baselines.majority_label(splits.train.label)
    predictions = np.full(splits.test.rows, float(label))
    return ModelRun(
        name="majority",
        predictions=predictions,
        fallback_rows=0,
        score_users=None,
        training_seconds=time.perf_counter() - started,
        note=f"always {label} stars, so no ranking",
        details={"majority_label": label},
    )


def run_popularity(splits: Splits) -> ModelRun:
    """Rank movies by their number of train ratings; the counts are not ratings."""
    started = time.perf_counter()
    model = baselines.popularity_model(
        splits.train.movie_index, splits.features.num_users, splits.features.num_movies
    )
    return ModelRun(
        name="popularity",
        predictions=None,
        fallback_rows=None,
        score_users=model.score_matrix,
        training_seconds=time.perf_counter() - started,
        factors=model,
        note="ranks by train ratings, so no rating metrics",
    )


def run_embedding(config: Config, splits: Splits, settings: EmbeddingSettings) -> ModelRun:
    """Train the Keras rating model from the indexed Parquet tables."""
    fit_uri = feature_tables.table_uri(config, feature_tables.FIT_TABLE)
    validation_uri = feature_tables.table_uri(config, feature_tables.VALIDATION_TABLE)
    fit_data = feature_tables.rating_batches([fit_uri], settings.batch_size, config.seed)
    validation_data = feature_tables.rating_batches(
        [validation_uri], settings.batch_size, config.seed, shuffle=False
    )
    refit_data = feature_tables.rating_batches(
        [fit_uri, validation_uri], settings.batch_size, config.seed
    )
    global_mean = float(np.mean(splits.fit.rating, dtype=np.float64))
    result = train_rating_model(
        fit_data,
        validation_data,
        refit_data,
        splits.features,
        global_mean,
        settings,
        config.seed,
    )
    details = {
        "settings": dataclasses.asdict(settings),
        "best_epoch": result.best_epoch,
        "member_best_epochs": list(result.member_best_epochs),
        "history": result.history,
    }
    return _factor_run("embedding", result.model, splits.test, result.seconds, details=details)


def run_ranking(config: Config, splits: Splits, settings: EmbeddingSettings) -> ModelRun:
    """Train the implicit-feedback ranking model; its logits rank and are not ratings."""
    # NOTE: unlike the rating model, the ranking model trains from the fit rows in memory
    # plus their sampled negatives, not from streamed Parquet batches.
    result = train_ranking_model(
        splits.fit, splits.validation, splits.features, settings, config.seed
    )
    test = splits.test
    return ModelRun(
        name="ranking",
        predictions=None,
        fallback_rows=int(result.model.fallback_rows(test.user_index, test.movie_index).sum()),
        score_users=result.model.score_matrix,
        training_seconds=result.seconds,
        factors=result.model,
        note="trained for ranking, so no rating metrics",
        details={
            "settings": dataclasses.asdict(settings),
            "best_epoch": result.best_epoch,
            "history": result.history,
        },
    )


def load_als(config: Config, splits: Splits) -> tuple[FactorModel, dict[str, Any]] | str:
    """Build the ALS model and read als.json, or return why the model cannot be built.

    A user or movie without a factor row is predicted as the global mean of als.json.
    """
    from lenspark import parquet_io

    user_uri = feature_tables.table_uri(config, "als_user_factors")
    item_uri = feature_tables.table_uri(config, "als_item_factors")
    summary_uri = f"{config.report_dir}/als.json"
    for uri in (user_uri, item_uri):
        try:
            storage.require_complete(uri, producer="als")
        except IncompleteTableError:
            return f"the ALS stage has not run: {uri} is missing or incomplete (run make als)"
    if not storage.exists(summary_uri):
        return f"the ALS stage has not run: {summary_uri} is missing (run make als)"
    summary = storage.read_json(summary_uri)

    tables = {}
    for key, uri, index_column, size in (
        ("user", user_uri, feature_tables.USER_INDEX, splits.features.num_users),
        ("movie", item_uri, feature_tables.MOVIE_INDEX, splits.features.num_movies),
    ):
        table = parquet_io.read_table(uri, [index_column, "factors"], producer="als")
        indices = table.column(index_column).to_numpy().astype(np.int64)
        vectors = np.array(table.column("factors").to_pylist(), dtype=np.float64)
        if indices.size and indices.max() > size:
            raise InputFormatError(
                f"Table {uri} has {index_column} {indices.max()}, above the OOV index {size}. "
                "Rerun the index and als stages (make index als)."
            )
        rank = vectors.shape[1] if vectors.ndim == 2 else 0
        factors = np.zeros((size + 1, rank))
        known = np.zeros(size + 1, dtype=bool)
        factors[indices] = vectors
        known[indices] = True
        tables[key] = (factors, known)

    (user_factors, user_known), (movie_factors, movie_known) = tables["user"], tables["movie"]
    return FactorModel(
        global_mean=0.0,
        user_bias=np.zeros(splits.features.num_users + 1),
        movie_bias=np.zeros(splits.features.num_movies + 1),
        user_factors=user_factors,
        movie_factors=movie_factors,
        user_known=user_known,
        movie_known=movie_known,
        fallback_rating=float(summary["global_mean"]),
    ), summary


def run_als(config: Config, splits: Splits) -> ModelRun | str:
    """Score Spark ALS from its factor tables, or return the reason it is skipped."""
    loaded = load_als(config, splits)
    if isinstance(loaded, str):
        return loaded
    model, summary = loaded
    details = {
        "rank": summary.get("best_rank"),
        "reg_param": summary.get("best_reg_param"),
        "spark_test_rmse": summary.get("test_rmse"),
    }
    return _factor_run("als", model, splits.test, summary.get("fit_seconds"), details=details)


def _reference_inputs(userids: np.ndarray, movieids: np.ndarray, genre_index: np.ndarray):
    return np.column_stack([userids, movieids, genre_index]).astype(np.float32)


def run_reference(config: Config, splits: Splits) -> ModelRun:
    """Score the reference classifier, training it first when its model file is missing.

    Its rating is the expected star count under the predicted class probabilities and
    its whole-star accuracy uses the most probable class, as the evaluate stage does.
    It reads raw ids, so it has no OOV slot and no fallback rows.
    """
    from lenspark import evaluate, train

    training_seconds = None
    if not storage.exists(train.model_uri(config)):
        logger.info("No reference model at %s, so the train stage runs", train.model_uri(config))
        started = time.perf_counter()
        train.run(config)
        training_seconds = time.perf_counter() - started
    else:
        entries = manifest.load_manifest(config)
        training_seconds = entries.get("train", {}).get("seconds")
    model = evaluate.load_model(train.model_uri(config))

    test = splits.test
    classes = np.arange(model.output_shape[-1], dtype=np.float64)
    inputs = _reference_inputs(test.userid, test.movieid, test.genre_index)
    probabilities = model.predict(inputs, batch_size=REFERENCE_PREDICT_BATCH, verbose=0)
    expected = probabilities.astype(np.float64) @ classes

    # Every indexed movie's genre index comes from its train rows.
    train = splits.train
    movie_genre = np.zeros(splits.features.num_movies, dtype=np.int64)
    known = train.movie_index < splits.features.num_movies
    movie_genre[train.movie_index[known]] = train.genre_index[known]
    movieids = splits.features.movieids
    userids = splits.features.userids

    def score_users(users: np.ndarray) -> np.ndarray:
        block = _reference_inputs(
            np.repeat(userids[users], movieids.size),
            np.tile(movieids, users.size),
            np.tile(movie_genre, users.size),
        )
        scores = model.predict(block, batch_size=REFERENCE_PREDICT_BATCH, verbose=0) @ classes
        return scores.reshape(users.size, movieids.size)

    result = ModelRun(
        name="reference",
        predictions=expected,
        fallback_rows=0,
        score_users=score_users,
        training_seconds=training_seconds,
        note="rating is the expected class; accuracy uses the most probable class",
    )
    result.details["accuracy_classes"] = np.argmax(probabilities, axis=1)
    return result


def _row(result: ModelRun, test: Ratings, ranking_metrics: dict[str, float] | None, k: int):
    row: dict[str, Any] = {
        "model": result.name,
        "rmse": None,
        "mae": None,
        "accuracy": None,
        f"precision_at_{k}": None,
        f"recall_at_{k}": None,
        f"ndcg_at_{k}": None,
        "fallback_rows": result.fallback_rows,
        "training_seconds": result.training_seconds,
        "note": result.note,
    }
    if result.predictions is not None:
        row.update(rating_metrics(result.predictions, test))
        classes = result.details.pop("accuracy_classes", None)
        if classes is not None:
            row["accuracy"] = float(np.mean(classes == test.label))
    if ranking_metrics is not None:
        row.update(ranking_metrics)
    return row


def load_splits(config: Config) -> Splits:
    """Read the index and the indexed fit, validation and test rows."""
    return Splits(
        features=feature_tables.load_movie_features(config),
        fit=feature_tables.load_ratings(config, feature_tables.FIT_TABLE),
        validation=feature_tables.load_ratings(config, feature_tables.VALIDATION_TABLE),
        test=feature_tables.load_ratings(config, feature_tables.TEST_TABLE),
    )


def _runners(
    config: Config,
    splits: Splits,
    settings: EmbeddingSettings,
    ranking_settings: EmbeddingSettings,
) -> dict[str, Callable[[], ModelRun | str]]:
    return {
        "reference": lambda: run_reference(config, splits),
        "embedding": lambda: run_embedding(config, splits, settings),
        "ranking": lambda: run_ranking(config, splits, ranking_settings),
        "bias": lambda: run_bias(splits),
        "global_mean": lambda: run_global_mean(splits),
        "majority": lambda: run_majority(splits),
        "popularity": lambda: run_popularity(splits),
        "als": lambda: run_als(config, splits),
    }


def save_curves(config: Config, results: Sequence[ModelRun]) -> dict[str, str]:
    """Plot the per-epoch training and validation curves of the Keras models as PNG files."""
    outputs = {}
    for result in results:
        if result.name not in CURVE_PLOTS or "history" not in result.details:
            continue
        history = result.details["history"]
        metric, unit = (
            ("rmse", "RMSE (stars)")
            if result.name == "embedding"
            else (
                "loss",
                "binary cross-entropy (nats per pair)",
            )
        )
        series = {
            f"training {metric}": [record[metric] for record in history],
            f"validation {metric}": [record[f"val_{metric}"] for record in history],
        }
        png = plots.line_chart(
            series,
            title=f"{result.name} model on {config.dataset}: {metric} per epoch",
            xlabel="epoch",
            ylabel=unit,
        )
        uri = report_uri(config, CURVE_PLOTS[result.name])
        storage.write_bytes(uri, png)
        outputs[f"{result.name}_curves"] = uri
    return outputs


def run(
    config: Config,
    settings: EmbeddingSettings | None = None,
    ranking_settings: EmbeddingSettings | None = None,
) -> dict[str, Any]:
    """Run the selected models, score them on the test rows and write comparison.json.

    ``settings`` configures the rating model and ``ranking_settings`` the ranking model;
    each left at None is chosen by ``settings_for`` from the number of fit rows.
    Returns the comparison that was written.
    """
    models = selected_models(config)
    k = RANKING_CUTOFF
    with timed(logger, STAGE, config.dataset) as clock:
        splits = load_splits(config)
        sized_settings, sized_ranking_settings = settings_for(splits.fit.rows)
        settings = settings or sized_settings
        ranking_settings = ranking_settings or sized_ranking_settings
        if splits.test.rows == 0:
            raise InputFormatError(
                f"Table {feature_tables.table_uri(config, feature_tables.TEST_TABLE)} has no "
                "rows, so there is nothing to compare on. Rerun the prepare and index stages."
            )
        train = splits.train
        rated_in_train = ranking.group_by_user(
            train.user_index, train.movie_index, splits.features.num_users
        )
        relevant = ranking.relevant_by_user(
            splits.test.user_index,
            splits.test.movie_index,
            splits.test.rating,
            splits.features.num_users,
        )
        users, sampled = ranking.sample_users(list(relevant), config.ranking_users, config.seed)
        logger.info(
            "Ranking on %d of %d users with a relevant test rating", len(users), len(relevant)
        )

        runners = _runners(config, splits, settings, ranking_settings)
        rows, skipped, results = [], [], []
        folder = model_folder(config)
        outputs: dict[str, str] = {}
        for name in models:
            logger.info("Model %s started", name)
            result = runners[name]()
            if isinstance(result, str):
                logger.warning("Model %s skipped: %s", name, result)
                skipped.append({"model": name, "reason": result})
                continue
            metrics = None
            if result.score_users is not None:
                metrics = ranking.evaluate_ranking(
                    result.score_users, users, relevant, rated_in_train, k
                )
            rows.append(_row(result, splits.test, metrics, k))
            if result.factors is not None:
                uri = baselines.model_file(folder, name)
                result.factors.save(uri)
                outputs[f"{name}_model"] = uri
            results.append(result)
            logger.info("Model %s: %s", name, rows[-1])

        # The recommend stage can serve only models saved in factor form.
        ranked = [
            row
            for row in rows
            if row[f"ndcg_at_{k}"] is not None and f"{row['model']}_model" in outputs
        ]
        best = max(ranked, key=lambda row: row[f"ndcg_at_{k}"])["model"] if ranked else None
        comparison = {
            "dataset": config.dataset,
            "split": config.split,
            "seed": config.seed,
            "test_rows": splits.test.rows,
            "train_rows": train.rows,
            "ranking": {
                "k": k,
                "relevant_rating": ranking.RELEVANT_RATING,
                "users_with_relevant_test_rating": len(relevant),
                "users_evaluated": len(users),
                "sampled": sampled,
                "sample_seed": config.seed if sampled else None,
            },
            "models_selected": models,
            "models": rows,
            "skipped": skipped,
            "best_ndcg_model": best,
            "details": {result.name: result.details for result in results if result.details},
        }
        outputs.update(save_curves(config, results))
        outputs["comparison"] = comparison_uri(config)
        storage.write_json(outputs["comparison"], comparison)
        outputs["report"] = report.render_report(config)

    counts = {
        "rows_in": splits.test.rows,
        "models_run": len(rows),
        "models_skipped": len(skipped),
        "best_ndcg_model": best,
    }
    manifest.record_stage(config, STAGE, counts, outputs, clock["seconds"])
    return comparison


def main(argv: Sequence[str] | None = None) -> int:
    """Run the compare stage from the command line (``python -m lenspark.compare``)."""
    configure_logging()
    try:
        config = parse_config(
            "Train the selected models and compare them on the same test rows.",
            argv,
            training=True,
        )
        run(config)
    except LensparkError as error:
        logger.error("compare failed: %s", error)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
