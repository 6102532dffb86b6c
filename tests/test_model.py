"""Unit tests of the reference model's layers, features, labels and baseline."""

import keras
import numpy as np
import pyarrow as pa
import pytest

from lenspark.columns import NUM_CLASSES
from lenspark.errors import InputFormatError
from lenspark.model import (
    build_reference_model,
    constant_class_accuracy,
    majority_class,
    one_hot_labels,
    reference_features,
)


def test_one_hot_width_six_when_classes_absent():
    # Only classes 1 and 3 occur, yet every row must have one column per class 0..5.
    encoded = one_hot_labels(np.array([1, 3, 3], dtype=np.int32))

    assert encoded.shape == (3, NUM_CLASSES)
    assert NUM_CLASSES == 6
    assert encoded.dtype == np.float32
    assert encoded[0].tolist() == [0, 1, 0, 0, 0, 0]
    assert encoded[1].tolist() == [0, 0, 0, 1, 0, 0]
    assert encoded.sum(axis=1).tolist() == [1, 1, 1]


def test_one_hot_width_six_for_single_class():
    encoded = one_hot_labels(np.array([5], dtype=np.int64))

    assert encoded.shape == (1, 6)
    assert encoded[0].tolist() == [0, 0, 0, 0, 0, 1]


@pytest.mark.parametrize("label", [-1, 6, 7])
def test_one_hot_rejects_label_outside_classes(label):
    with pytest.raises(InputFormatError, match=f"for example {label}"):
        one_hot_labels(np.array([1, label]))


def test_one_hot_rejects_fractional_ratings():
    with pytest.raises(InputFormatError, match="integer classes"):
        one_hot_labels(np.array([3.5, 4.0]))


def test_reference_model_layer_shapes():
    model = build_reference_model()
    dense_layers = model.layers

    assert model.input_shape == (None, 3)
    assert model.output_shape == (None, 6)
    assert [layer.units for layer in dense_layers] == [32, 10, 6]
    assert [layer.activation.__name__ for layer in dense_layers] == ["relu", "relu", "softmax"]
    assert [layer.kernel.shape for layer in dense_layers] == [(3, 32), (32, 10), (10, 6)]
    assert model.count_params() == (3 * 32 + 32) + (32 * 10 + 10) + (10 * 6 + 6)


def test_reference_model_compile_settings():
    model = build_reference_model()

    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert model.loss == "categorical_crossentropy"
    probabilities = model.predict(np.zeros((2, 3), dtype=np.float32), verbose=0)
    assert probabilities.shape == (2, 6)
    np.testing.assert_allclose(probabilities.sum(axis=1), [1.0, 1.0], rtol=1e-5)


def test_reference_features_order_and_dtype():
    table = pa.table(
        {
            "genre_index": pa.array([7, 8], pa.int32()),
            "label": pa.array([4, 2], pa.int32()),
            "movieid": pa.array([100, 200], pa.int32()),
            "userid": pa.array([1, 2], pa.int32()),
        }
    )

    features = reference_features(table)

    assert features.dtype == np.float32
    assert features.shape == (2, 3)
    assert features.tolist() == [[1, 100, 7], [2, 200, 8]]


def test_reference_features_missing_column():
    table = pa.table({"userid": [1], "movieid": [2]})

    with pytest.raises(InputFormatError, match="genre_index"):
        reference_features(table)


def test_reference_features_rejects_nulls():
    table = pa.table({"userid": [1, 2], "movieid": [3, 4], "genre_index": [5, None]})

    with pytest.raises(InputFormatError, match="'genre_index' has 1 null"):
        reference_features(table)


def test_majority_class_and_share():
    majority, share = majority_class(np.array([4, 4, 3, 4, 5, 3]))

    assert majority == 4
    assert share == pytest.approx(0.5)


def test_majority_class_tie_goes_to_lowest():
    majority, share = majority_class(np.array([5, 2, 5, 2]))

    assert majority == 2
    assert share == pytest.approx(0.5)


def test_majority_class_rejects_empty_labels():
    with pytest.raises(InputFormatError, match="empty"):
        majority_class(np.array([], dtype=np.int32))


def test_constant_class_accuracy():
    assert constant_class_accuracy(4, np.array([4, 1, 4, 2])) == pytest.approx(0.5)
    assert constant_class_accuracy(3, np.array([4, 1])) == 0.0
