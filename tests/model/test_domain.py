"""The out-of-domain score: the artifact's trust outputs, the fit, the judgements, and what an
older artifact (one output) answers instead."""

from __future__ import annotations

import numpy as np
import pytest

from shared.model.export import block_statistic_widths, export_artifact, serving_graph
from shared.serving import domain as domains
from shared.serving.runtime import LITERT_ARTIFACT, ServingModel
from tests.model.conftest import SERVING_ARTIFACTS

WIDTHS = [4, 6]


def _statistics(rng: np.random.Generator, count: int, shift: float = 0.0) -> np.ndarray:
    """Correlated statistics like a block's: a shared factor plus noise, optionally shifted
    against the correlation (up in one half of the statistics, down in the other)."""
    shared_factor = rng.normal(size=(count, 1))
    against = np.where(np.arange(sum(WIDTHS)) % 2 == 0, 1.0, -1.0)
    return shared_factor + 0.5 * rng.normal(size=(count, sum(WIDTHS))) + shift * against


@pytest.fixture(scope="module")
def fitted() -> domains.FittedDomain:
    rng = np.random.default_rng(0)
    return domains.fit(
        _statistics(rng, 400),
        _statistics(rng, 300),
        _statistics(rng, 60, shift=3.0),
        widths=WIDTHS,
        photographs_source="synthetic",
    )


def test_images_like_the_training_ones_pass_and_shifted_ones_are_flagged(fitted) -> None:
    model = domains.DomainModel.from_bytes(fitted.file)
    rng = np.random.default_rng(1)
    alike = model.judge(_statistics(rng, 500))
    shifted = model.judge(_statistics(rng, 200, shift=3.0))
    assert sum(j.unlike_training for j in alike) / len(alike) < 0.05
    assert sum(j.not_dermoscopy for j in alike) / len(alike) < 0.02
    assert all(j.unlike_training for j in shifted)
    assert sum(j.not_dermoscopy for j in shifted) / len(shifted) > 0.9
    components = min(domains.PROJECTION_COMPONENTS, sum(WIDTHS))  # no more than there are statistics
    assert model.project(_statistics(rng, 3)).shape == (3, components)
    assert model.reference_projection.shape == (300, components)


def test_the_score_is_scaled_so_that_one_percent_of_validation_images_reach_one(fitted) -> None:
    model = domains.DomainModel.from_bytes(fitted.file)
    rng = np.random.default_rng(2)
    assert np.quantile(model.score(_statistics(rng, 4000)), 0.99) == pytest.approx(1.0, abs=0.15)
    assert fitted.card["unlike_training"]["threshold_score"] == 1.0
    assert fitted.card["not_dermoscopy"]["detector"]["photographs"] == 60


def test_without_photographs_only_images_far_from_the_training_ones_are_called_not_dermoscopy() -> None:
    rng = np.random.default_rng(3)
    fitted = domains.fit(_statistics(rng, 200), _statistics(rng, 100), None, widths=WIDTHS)
    model = domains.DomainModel.from_bytes(fitted.file)
    alike, far = model.judge(_statistics(rng, 1))[0], model.judge(_statistics(rng, 1, shift=30.0))[0]
    assert fitted.card["not_dermoscopy"]["detector"] is None
    assert not alike.not_dermoscopy and alike.public()["available"] is True
    assert far.score >= domains.FAR_SCORE and far.not_dermoscopy


def test_widths_that_do_not_match_the_statistics_are_refused() -> None:
    rng = np.random.default_rng(4)
    with pytest.raises(ValueError, match="do not add up"):
        domains.fit(_statistics(rng, 50), _statistics(rng, 50), None, widths=[3, 3])


def test_the_photographs_split_is_fixed_and_about_half() -> None:
    names = [f"photo_{index}.jpg" for index in range(400)]
    fitted = [name for name in names if domains.in_fitted_half(name)]
    assert fitted == [name for name in names if domains.in_fitted_half(name)]
    assert 150 < len(fitted) < 250


@pytest.mark.slow  # exports the tiny model with its trust outputs: ~15-30 s an artifact
@pytest.mark.parametrize("name", SERVING_ARTIFACTS)
def test_the_served_artifact_has_the_trust_outputs_and_the_same_probability(
    tiny_model, probe_pixels, name: str
) -> None:
    served = ServingModel.from_bytes(
        "v", export_artifact(serving_graph(tiny_model), name), {"threshold": 0.5, "serving_artifact": name}, threads=1
    )
    outputs = served.run(probe_pixels)
    expected = tiny_model.predict(probe_pixels, verbose=0).reshape(-1)
    np.testing.assert_allclose(outputs.raw, expected, atol=1e-4)
    assert outputs.block_statistics.shape == (len(probe_pixels), sum(block_statistic_widths(tiny_model)))
    assert outputs.class_activation.shape == (len(probe_pixels), 7, 7)
    # The class activation is the logit spread over the 7x7 grid: its mean plus the bias is the logit.
    bias = float(tiny_model.get_layer("probability_malignant").get_weights()[1][0])
    logits = outputs.class_activation.mean(axis=(1, 2)) + bias
    np.testing.assert_allclose(1 / (1 + np.exp(-logits)), expected, atol=1e-4)


def test_an_artifact_with_the_probability_only_has_no_domain_judgement(tiny_artifacts, probe_pixels) -> None:
    served = ServingModel.from_bytes(
        "old", tiny_artifacts[LITERT_ARTIFACT], {"threshold": 0.5, "serving_artifact": LITERT_ARTIFACT}, threads=1
    )
    outputs = served.run(probe_pixels)
    assert outputs.block_statistics is None and outputs.class_activation is None
    assert served.judge_domain(outputs) is None
    answer = domains.not_available("old")
    assert answer["available"] is False and "old" in answer["reason"] and answer["score"] is None


def test_the_fitted_half_of_a_photographs_folder_is_loaded_and_an_empty_folder_gives_none(tmp_path) -> None:
    from shared.model.data import photographs_from
    from tests.model.conftest import write_images

    assert photographs_from(None) is None and photographs_from(tmp_path) is None
    write_images(tmp_path / "photos", 20, seed=5)
    photographs = photographs_from(tmp_path / "photos")
    expected = sum(
        domains.in_fitted_half(f"{label}_{index}.{'png' if index % 2 else 'jpg'}")
        for label in ("benign", "malignant")
        for index in range(20)
    )
    assert len(photographs.pixels) == expected and 0 < expected < 40
    assert f"{expected} of 40 images" in photographs.source
