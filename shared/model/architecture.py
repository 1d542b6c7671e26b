"""The classifier: MobileNetV2 (alpha 1.0, 224x224) + pooling + dropout + one sigmoid.

Preprocessing lives inside the model (colour constancy, then a Rescaling layer to
MobileNetV2's [-1, 1] range), so training and serving cannot disagree: every runtime is fed
uint8-range RGB pixels, 224x224.
"""

from __future__ import annotations

from typing import Any

import keras

INPUT_SHAPE = (224, 224, 3)
BACKBONE_NAME = "mobilenetv2"
OUTPUT_NAME = "probability_malignant"


@keras.saving.register_keras_serializable(package="skin_lesion")
class ShadesOfGray(keras.layers.Layer):
    """Colour constancy: remove the colour cast of the light and the camera from each image.

    Dermatoscopes differ in light source and sensor, and a model trained on one clinic's
    colours loses accuracy on another's. Shades of Gray (Finlayson and Trezzi, 2004) estimates
    the illuminant of each channel as the Minkowski p-norm mean of its pixels, then scales
    the channels so that estimate becomes grey, keeping its length (overall brightness). It
    is the usual normalisation in ISIC challenge entries (p = 6). No weights: the layer is
    part of the model only so that every runtime applies it identically.
    """

    def __init__(self, power: float = 6.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if power < 1.0:
            raise ValueError(f"power must be at least 1, received power={power}")
        self.power = power

    def call(self, images: Any) -> Any:
        ops = keras.ops
        unit = ops.clip(images / 255.0, 0.0, 1.0)
        illuminant = ops.power(ops.mean(ops.power(unit, self.power), axis=(1, 2), keepdims=True), 1.0 / self.power)
        illuminant = illuminant + 1e-6  # an all-black channel keeps its zeros instead of dividing by 0
        length = ops.sqrt(ops.sum(ops.square(illuminant), axis=-1, keepdims=True))
        gains = length / (illuminant * 3.0**0.5)
        return ops.clip(images * gains, 0.0, 255.0)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "power": self.power}


def build_model(
    weights: str | None = "imagenet",
    *,
    alpha: float = 1.0,
    dropout_rate: float = 0.3,
    seed: int = 1337,
    colour_constancy: bool = True,
) -> keras.Model:
    """Build the classifier with a frozen backbone (training unfreezes what it fine-tunes).

    Args:
        weights: `"imagenet"`, a path to MobileNetV2 no-top weights (`.h5`), or `None` for
            random initialisation (tests). Defaults to `"imagenet"`.
        alpha: MobileNetV2 width multiplier. Defaults to `1.0`.
        dropout_rate: dropout before the output layer, in [0, 1). Defaults to `0.3`.
        seed: seed of the head's initialisers and dropout. Defaults to `1337`.
        colour_constancy: normalise each image's colours with `ShadesOfGray` first.
            Defaults to `True`.
    """
    if not 0.0 <= dropout_rate < 1.0:
        raise ValueError(f"dropout_rate must be in [0, 1), received dropout_rate={dropout_rate}")
    if alpha not in (0.35, 0.5, 0.75, 1.0, 1.3, 1.4):
        raise ValueError(f"alpha must be a MobileNetV2 width multiplier, received alpha={alpha}")
    inputs = keras.Input(INPUT_SHAPE, name="image", dtype="float32")
    normalised = ShadesOfGray(name="colour_constancy")(inputs) if colour_constancy else inputs
    scaled = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="to_unit_range")(normalised)
    backbone = keras.applications.MobileNetV2(
        input_shape=INPUT_SHAPE, alpha=alpha, include_top=False, weights=weights, name=BACKBONE_NAME
    )
    backbone.trainable = False
    # training=False keeps batch-norm statistics frozen even when the backbone is unfrozen:
    # the usual recipe for fine-tuning on a small dataset.
    features = backbone(scaled, training=False)
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(features)
    dropped = keras.layers.Dropout(dropout_rate, seed=seed, name="dropout")(pooled)
    initializer = keras.initializers.GlorotUniform(seed=seed)
    outputs = keras.layers.Dense(1, activation="sigmoid", kernel_initializer=initializer, name=OUTPUT_NAME)(dropped)
    return keras.Model(inputs, outputs, name="skin_lesion_classifier")
