"""The classifier: MobileNetV2 (alpha 1.0, 224x224) + pooling + dropout + one sigmoid.

Preprocessing lives inside the model (a Rescaling layer to MobileNetV2's [-1, 1] range), so
training and serving cannot disagree: every runtime is fed uint8-range RGB pixels, 224x224.
"""

from __future__ import annotations

import keras

INPUT_SHAPE = (224, 224, 3)
BACKBONE_NAME = "mobilenetv2"
OUTPUT_NAME = "probability_malignant"


def build_model(
    weights: str | None = "imagenet",
    *,
    alpha: float = 1.0,
    dropout_rate: float = 0.3,
    seed: int = 1337,
) -> keras.Model:
    """Build the classifier with a frozen backbone (training unfreezes what it fine-tunes).

    Args:
        weights: `"imagenet"`, a path to MobileNetV2 no-top weights (`.h5`), or `None` for
            random initialisation (tests). Defaults to `"imagenet"`.
        alpha: MobileNetV2 width multiplier. Defaults to `1.0`.
        dropout_rate: dropout before the output layer, in [0, 1). Defaults to `0.3`.
        seed: seed of the head's initialisers and dropout. Defaults to `1337`.
    """
    if not 0.0 <= dropout_rate < 1.0:
        raise ValueError(f"dropout_rate must be in [0, 1), received dropout_rate={dropout_rate}")
    if alpha not in (0.35, 0.5, 0.75, 1.0, 1.3, 1.4):
        raise ValueError(f"alpha must be a MobileNetV2 width multiplier, received alpha={alpha}")
    inputs = keras.Input(INPUT_SHAPE, name="image", dtype="float32")
    scaled = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="to_unit_range")(inputs)
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
