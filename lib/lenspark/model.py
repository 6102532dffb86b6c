"""The reference Keras model: its layers, features, labels and the majority-class baseline.

Every function here is pure. It takes arrays or tables and returns arrays or an
untrained model, without file or network access. The train and evaluate stages do the I/O.
"""

from __future__ import annotations

import keras
import numpy as np
import pyarrow as pa

from lenspark.columns import GENRE_INDEX, MOVIEID, NUM_CLASSES, USERID
from lenspark.errors import InputFormatError

# The model's inputs, in the order of the input vector.
FEATURE_COLUMNS = (USERID, MOVIEID, GENRE_INDEX)


def build_reference_model() -> keras.Model:
    """Build and compile the reference classifier of whole-star classes.

    Input: userid, movieid and genre_index as raw float32 numbers, without scaling or
    embeddings. Layers: Dense(32, relu), Dense(10, relu), Dense(6, softmax). Compiled
    with adam, categorical cross-entropy and accuracy.
    """
    model = keras.Sequential(
        [
            keras.Input(shape=(len(FEATURE_COLUMNS),), dtype="float32", name="features"),
            keras.layers.Dense(32, activation="relu", name="hidden_32"),
            keras.layers.Dense(10, activation="relu", name="hidden_10"),
            keras.layers.Dense(NUM_CLASSES, activation="softmax", name="class_probabilities"),
        ],
        name="reference",
    )
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def _require_columns(table: pa.Table, columns: tuple[str, ...]) -> None:
    missing = [name for name in columns if name not in table.column_names]
    if missing:
        raise InputFormatError(
            f"Columns {missing} are missing from the table, which has {table.column_names}. "
            "Rerun the prepare stage (make prepare) to write the train and test tables."
        )
    for name in columns:
        nulls = table.column(name).null_count
        if nulls:
            raise InputFormatError(
                f"Column {name!r} has {nulls} null values, but the reference model needs a "
                "number in every row. Fix the prepare stage and rerun it (make prepare)."
            )


def reference_features(table: pa.Table) -> np.ndarray:
    """Return the model inputs of ``table`` as a float32 array of shape (rows, 3).

    The columns are userid, movieid and genre_index, in that order. Raises
    InputFormatError if a column is missing or contains nulls.
    """
    _require_columns(table, FEATURE_COLUMNS)
    columns = [table.column(name).to_numpy().astype(np.float32) for name in FEATURE_COLUMNS]
    return np.column_stack(columns)


def table_labels(table: pa.Table, column: str) -> np.ndarray:
    """Return the class labels in ``column`` of ``table`` as an int64 array.

    Raises InputFormatError if the column is missing or contains nulls.
    """
    _require_columns(table, (column,))
    return table.column(column).to_numpy().astype(np.int64)


def _validate_labels(labels: np.ndarray, num_classes: int) -> np.ndarray:
    values = np.asarray(labels)
    if values.ndim != 1:
        raise InputFormatError(f"Labels must be a 1-D array, got shape {values.shape}.")
    if values.size and not np.issubdtype(values.dtype, np.integer):
        raise InputFormatError(f"Labels must be integer classes, got dtype {values.dtype}.")
    outside = values[(values < 0) | (values >= num_classes)]
    if outside.size:
        raise InputFormatError(
            f"{outside.size} labels are outside the classes 0..{num_classes - 1}, "
            f"for example {int(outside[0])}. Check the label column of the prepare stage."
        )
    return values


def one_hot_labels(labels: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Encode integer classes as float32 one-hot rows of width ``num_classes``.

    The width stays ``num_classes`` even when some classes never occur, so that train
    and test targets always match the model's output layer. Raises InputFormatError
    for labels outside 0..num_classes-1.
    """
    values = _validate_labels(labels, num_classes)
    return keras.utils.to_categorical(values, num_classes=num_classes).astype(np.float32)


def class_counts(labels: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Return the number of rows of each class 0..num_classes-1, as an array of that length."""
    values = _validate_labels(labels, num_classes)
    return np.bincount(values, minlength=num_classes)


def majority_class(labels: np.ndarray) -> tuple[int, float]:
    """Return the most frequent class and its share of ``labels`` (0..1).

    A tie goes to the lowest class. Raises InputFormatError for an empty array.
    """
    counts = class_counts(labels)
    total = int(counts.sum())
    if total == 0:
        raise InputFormatError(
            "Cannot find the majority class of an empty label array. "
            "Check that the train table has rows (make prepare)."
        )
    # np.argmax returns the first maximum, so a tie goes to the lowest class.
    majority = int(np.argmax(counts))
    return majority, float(counts[majority]) / total


def constant_class_accuracy(predicted_class: int, labels: np.ndarray) -> float:
    """Return the accuracy (0..1) of predicting ``predicted_class`` for every row of ``labels``.

    Raises InputFormatError for an empty array.
    """
    values = _validate_labels(labels, NUM_CLASSES)
    if values.size == 0:
        raise InputFormatError(
            "Cannot measure accuracy on an empty label array. "
            "Check that the test table has rows (make prepare)."
        )
    return float(np.mean(values == predicted_class))
