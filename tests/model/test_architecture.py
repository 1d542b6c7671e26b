"""The model's own preprocessing (colour constancy), the training loss weights by hand, and the
feature cache against Keras."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from shared.model.architecture import BACKBONE_NAME, ShadesOfGray, build_model
from shared.model.data import LabelledImages
from shared.model.export import export_litert
from shared.model.training import TrainingConfig, _cache_views, _lower_features, sample_weights
from shared.serving.runtime import LiteRtRuntime


def normalise(image: np.ndarray) -> np.ndarray:
    return np.asarray(ShadesOfGray()(image[None].astype(np.float32)))[0]


def test_a_grey_image_keeps_its_colours() -> None:
    grey = np.full((8, 8, 3), 100.0)
    np.testing.assert_allclose(normalise(grey), grey, rtol=1e-5)


def test_a_colour_cast_becomes_grey_of_the_same_length() -> None:
    tinted = np.broadcast_to(np.array([200.0, 100.0, 50.0]), (8, 8, 3))
    # Illuminant (200, 100, 50)/255, length sqrt(52500)/255; every channel ends at sqrt(52500/3).
    np.testing.assert_allclose(normalise(tinted), np.full((8, 8, 3), np.sqrt(52500 / 3)), rtol=1e-4)


def test_a_tinted_scene_turns_grey_and_keeps_its_contrast() -> None:
    scene = np.empty((4, 4, 3))
    scene[:2] = [200.0, 100.0, 50.0]
    scene[2:] = [100.0, 50.0, 25.0]  # the same surface colour, half as bright
    out = normalise(scene)
    np.testing.assert_allclose(out[:2], np.full((2, 4, 3), np.sqrt(52500 / 3)), rtol=1e-4)
    np.testing.assert_allclose(out[2:], np.full((2, 4, 3), np.sqrt(52500 / 3) / 2), rtol=1e-4)


def test_outputs_stay_in_pixel_range_even_for_black_channels() -> None:
    image = np.random.default_rng(0).uniform(0, 255, (16, 16, 3))
    image[..., 2] = 0.0  # no blue at all: gains must not divide by zero
    out = normalise(image)
    assert np.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 255.0
    assert (out[..., 2] == 0.0).all()


def test_colour_constancy_can_be_left_out_and_power_is_checked() -> None:
    names = [layer.name for layer in build_model(None, alpha=0.35, colour_constancy=False).layers]
    assert "colour_constancy" not in names
    assert "colour_constancy" in [layer.name for layer in build_model(None, alpha=0.35).layers]
    with pytest.raises(ValueError, match="power"):
        ShadesOfGray(power=0.5)


def images(labels: list[int], diagnoses: list[int]) -> LabelledImages:
    count = len(labels)
    return LabelledImages(
        np.zeros((count, 1, 1, 3), np.uint8), np.array(labels), np.array(diagnoses), tuple(map(str, range(count))), ""
    )


def test_sample_weights_balance_classes_then_diagnoses() -> None:
    # Benign: three nevi (5) and one dermatofibroma (3); malignant: one melanoma (4), one akiec (0).
    data = images([0, 0, 0, 0, 1, 1], [5, 5, 5, 3, 4, 0])
    np.testing.assert_allclose(sample_weights(data, 0.0), [0.75, 0.75, 0.75, 0.75, 1.5, 1.5])
    np.testing.assert_allclose(sample_weights(data, 1.0), [0.5, 0.5, 0.5, 1.5, 1.5, 1.5])
    # Square-root balance: nevi 3**-0.5 each, the dermatofibroma 1, scaled so benign sums to 3.
    scale = 3 / (3 * 3**-0.5 + 1)
    np.testing.assert_allclose(sample_weights(data, 0.5), [scale * 3**-0.5] * 3 + [scale, 1.5, 1.5], rtol=1e-6)


def test_each_class_carries_half_the_loss_whatever_the_diagnoses() -> None:
    data = images([0, 0, 0, 1, 1, 1, 1, 1], [5, -1, 2, 4, 4, 4, 0, -1])
    weights = sample_weights(data, 0.5)
    assert weights[:3].sum() == pytest.approx(4.0) and weights[3:].sum() == pytest.approx(4.0)


@pytest.mark.slow  # converts the lower backbone to LiteRT: ~10 s
def test_the_litert_feature_cache_matches_the_keras_lower_backbone() -> None:
    backbone = build_model(None, alpha=0.35).get_layer(BACKBONE_NAME)
    extractor = keras.Model(backbone.input, backbone.get_layer("block_4_expand").input)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (5, 224, 224, 3), dtype=np.uint8)
    data = LabelledImages(pixels, np.array([0, 0, 0, 1, 1]), np.full(5, -1), tuple("abcde"), "")

    config = TrainingConfig.quick(views=2, batch_size=4, augmentation="colour")
    runtime = LiteRtRuntime(export_litert(extractor), 2)
    features, validation_features = _cache_views(runtime, extractor, data, config), _lower_features(runtime, data, 4)

    expected = extractor.predict(pixels.astype(np.float32), verbose=0)
    assert features.shape == (2, *expected.shape) and features.dtype == np.float16
    np.testing.assert_allclose(validation_features, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())
    assert not np.array_equal(features[0], features[1])  # each view is its own augmentation
