"""Is the served heat map faithful? Two checks on real images (issue 23), for tests and benches.

- Deletion: remove the 20% of the model input the map marks highest and p(malignant) should fall
  more than when a random 20% is removed. "Removed" is painted over with the image's own mean
  colour, which carries no lesion structure; "random" is a random 7x7 map stretched the same
  way, so both removals are blobs of the same smoothness and differ only in where they fall.
- Grad-CAM: the served class activation (ReLU) against Grad-CAM computed from the Keras model
  with gradients of the malignant logit with respect to the backbone's last feature map. For a
  pooled linear head both are the same map up to a positive factor, so they must correlate.

Needs TensorFlow (the Keras model); the worker never imports this.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from shared.heatmap import evidence_map, stretch
from shared.images import MODEL_INPUT_SIZE
from shared.model.architecture import BACKBONE_NAME, OUTPUT_NAME
from shared.serving.runtime import ServingModel

REMOVED_FRACTION = 0.2
RANDOM_DRAWS = 5


@dataclass(frozen=True)
class DeletionResult:
    """p(malignant) before and after each removal, per image (random: the mean over the draws)."""

    original: np.ndarray
    after_map: np.ndarray
    after_random: np.ndarray

    @property
    def map_beats_random(self) -> np.ndarray:
        """Per image: removing what the map marks lowered p(malignant) more than a random removal."""
        return (self.original - self.after_map) > (self.original - self.after_random)


def remove_top(pixels: np.ndarray, levels: np.ndarray, fraction: float = REMOVED_FRACTION) -> np.ndarray:
    """`pixels` (224, 224, 3) with the `fraction` of them highest in `levels` painted in their mean colour."""
    count = round(fraction * levels.size)
    order = np.argsort(levels, axis=None, kind="stable")[::-1][:count]
    removed = pixels.reshape(-1, 3).copy()
    removed[order] = np.rint(pixels.reshape(-1, 3).mean(axis=0)).astype(pixels.dtype)
    return removed.reshape(pixels.shape)


def deletion_test(
    served: ServingModel, pixels: np.ndarray, activations: np.ndarray, *, seed: int = 0, batch_size: int = 32
) -> DeletionResult:
    """Run the deletion check on model inputs `pixels` (N, 224, 224, 3) and their served `activations` (N, 7, 7)."""
    rng = np.random.default_rng(seed)
    by_map = np.stack(
        [
            remove_top(image, stretch(evidence_map(grid), MODEL_INPUT_SIZE))
            for image, grid in zip(pixels, activations, strict=True)
        ]
    )
    by_chance = np.stack(
        [
            remove_top(image, stretch(rng.random((7, 7)), MODEL_INPUT_SIZE))
            for image in pixels
            for _ in range(RANDOM_DRAWS)
        ]
    )
    return DeletionResult(
        original=_probabilities(served, pixels, batch_size),
        after_map=_probabilities(served, by_map, batch_size),
        after_random=_probabilities(served, by_chance, batch_size).reshape(len(pixels), RANDOM_DRAWS).mean(axis=1),
    )


def _probabilities(served: ServingModel, pixels: np.ndarray, batch_size: int) -> np.ndarray:
    return np.concatenate(
        [served.predict(pixels[start : start + batch_size]) for start in range(0, len(pixels), batch_size)]
    )


def grad_cam(model: keras.Model, pixels: np.ndarray) -> np.ndarray:
    """Grad-CAM of the malignant logit at the backbone's last feature map, after ReLU: (N, 7, 7).

    The logit is the output layer's pre-activation (its weights on the pooled features, plus
    the bias), so the sigmoid's slope does not scale the gradients image by image.
    """
    backbone = model.get_layer(BACKBONE_NAME)
    head = model.get_layer(OUTPUT_NAME)
    inputs = tf.convert_to_tensor(pixels, dtype=tf.float32)
    preprocessed = inputs
    for layer in model.layers[1 : model.layers.index(backbone)]:
        preprocessed = layer(preprocessed)
    with tf.GradientTape() as tape:
        features = backbone(preprocessed, training=False)
        tape.watch(features)
        logit = tf.matmul(tf.reduce_mean(features, axis=(1, 2)), head.kernel) + head.bias
    gradients = tape.gradient(logit, features)
    weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
    return np.maximum(tf.reduce_sum(weights * features, axis=-1).numpy(), 0.0)


def map_correlations(served: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Pearson correlation of each pair of 7x7 maps after ReLU; 1.0 where both are flat alike."""
    first = np.maximum(served, 0.0).reshape(len(served), -1)
    second = np.maximum(reference, 0.0).reshape(len(reference), -1)
    correlations = np.ones(len(first))
    for index, (a, b) in enumerate(zip(first, second, strict=True)):
        if a.std() > 0 and b.std() > 0:
            correlations[index] = float(np.corrcoef(a, b)[0, 1])
        elif not np.allclose(a / max(a.max(), 1e-12), b / max(b.max(), 1e-12)):
            correlations[index] = 0.0
    return correlations
