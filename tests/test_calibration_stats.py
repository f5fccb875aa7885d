"""service/calibration.py statistics on synthetic scores whose answers are known exactly."""

from __future__ import annotations

import itertools
import logging
import math

import numpy as np
import pytest

from service.calibration import (
    best_accuracy_threshold,
    equal_error_rate,
    far_frr,
    open_set_threshold,
    open_set_threshold_detail,
    pair_scores,
    person_best_scores,
    stranger_chance,
    threshold_for_far,
)


def unit_rows(n: int, dim: int, seed: int) -> np.ndarray:
    e = np.random.default_rng(seed).normal(size=(n, dim))
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def test_pair_scores_match_brute_force_across_blocks() -> None:
    e = unit_rows(700, 6, 1)  # more rows than one block (512)
    labels = [f"p{k}" for k in np.random.default_rng(2).integers(0, 150, len(e))]
    genuine, impostor = pair_scores(e, labels)
    want_g = [e[i] @ e[j] for i, j in itertools.combinations(range(len(e)), 2) if labels[i] == labels[j]]
    want_i = [e[i] @ e[j] for i, j in itertools.combinations(range(len(e)), 2) if labels[i] != labels[j]]
    assert genuine.dtype == impostor.dtype == np.float64
    np.testing.assert_allclose(genuine, want_g, atol=1e-12)
    np.testing.assert_allclose(impostor, want_i, atol=1e-12)


def test_pair_scores_tiny_known_values() -> None:
    e = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [-1.0, 0.0]])
    genuine, impostor = pair_scores(e, ["a", "a", "b", "b"])
    np.testing.assert_allclose(genuine, [0.6, 0.0])  # (0, 1), (2, 3)
    np.testing.assert_allclose(impostor, [0.0, -1.0, 0.8, -0.6])  # (0, 2), (0, 3), (1, 2), (1, 3)


def test_pair_scores_subsample_is_deterministic_subset() -> None:
    e = unit_rows(300, 5, 3)
    labels = [str(k % 40) for k in range(len(e))]
    _, everything = pair_scores(e, labels)
    _, a = pair_scores(e, labels, max_impostor_pairs=1000, seed=7)
    _, b = pair_scores(e, labels, max_impostor_pairs=1000, seed=7)
    _, c = pair_scores(e, labels, max_impostor_pairs=1000, seed=8)
    assert len(a) == 1000 and np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.isin(a, everything).all()
    _, nearly = pair_scores(e, labels, max_impostor_pairs=len(everything) - 1)
    assert len(nearly) == len(everything) - 1 and np.isin(nearly, everything).all()
    _, draws = person_best_scores(e, labels, max_impostor_draws=500, seed=1)
    assert len(draws) == 500


def test_pair_scores_edge_cases() -> None:
    g, i = pair_scores(np.zeros((0, 4)), [])
    assert len(g) == len(i) == 0
    g, i = pair_scores(unit_rows(3, 4, 0), ["x", "y", "z"])
    assert len(g) == 0 and len(i) == 3
    with pytest.raises(ValueError, match="labels"):
        pair_scores(unit_rows(3, 4, 0), ["x", "y"])


def test_person_best_scores_take_each_persons_best_example() -> None:
    # a: two examples; b: two examples; c: one
    e = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [0.6, 0.8], [-1.0, 0.0]])
    genuine, impostor = person_best_scores(e, ["a", "a", "b", "b", "c"])
    np.testing.assert_allclose(np.sort(genuine), np.sort([0.8, 0.8, 0.8, 0.8]))
    # probe 0 vs b: max(0, .6) = .6, vs c: -1; probe 1 vs b: max(.6, .96), vs c: -.8
    # probe 2 vs a: max(0, .6), vs c: 0; probe 3 vs a: max(.6, .96), vs c: -.6
    # probe 4 vs a: max(-1, -.8), vs b: max(0, -.6)
    want = [0.6, -1.0, 0.96, -0.8, 0.6, 0.0, 0.96, -0.6, -0.8, 0.0]
    np.testing.assert_allclose(np.sort(impostor), np.sort(want), atol=1e-12)


def test_far_frr_counts_ties_as_matches() -> None:
    genuine = [0.5, 0.7, 0.9, 1.0]
    impostor = [0.1, 0.5, 0.6, 0.7, 0.8]
    far, frr = far_frr(genuine, impostor, [0.5, 0.7, 0.95, 2.0, -2.0])
    np.testing.assert_allclose(far, [4 / 5, 2 / 5, 0, 0, 1])
    np.testing.assert_allclose(frr, [0, 1 / 4, 3 / 4, 1, 0])


def test_equal_error_rate_separable_is_zero_in_the_middle_of_the_gap() -> None:
    assert equal_error_rate([0.9, 1.0], [0.1, 0.2]) == (0.0, pytest.approx(0.55))


def test_equal_error_rate_where_rates_are_equal_over_a_range() -> None:
    # at any t in (0.4, 0.6]: FAR = 1/4 (0.6), FRR = 1/4 (0.4)
    eer, t = equal_error_rate([0.4, 0.7, 0.8, 0.9], [0.1, 0.2, 0.3, 0.6])
    assert eer == pytest.approx(0.25) and t == pytest.approx(0.5)


def test_equal_error_rate_interpolates_a_crossing_between_steps() -> None:
    # t in (0.4, 0.5]: FAR 1/2, FRR 1/3; t in (0.5, 0.9]: FAR 0, FRR 1/3 -> meet at 1/3
    eer, t = equal_error_rate([0.4, 0.9, 0.95], [0.1, 0.5])
    assert eer == pytest.approx(1 / 3) and t == pytest.approx(0.5 + 0.4 / 3)


def test_equal_error_rate_symmetric_gaussians() -> None:
    rng = np.random.default_rng(0)
    genuine, impostor = rng.normal(1.0, 1.0, 200_000), rng.normal(-1.0, 1.0, 200_000)
    eer, t = equal_error_rate(genuine, impostor)
    # Phi(-1) = 0.158655...
    assert eer == pytest.approx(0.158655, abs=0.003) and t == pytest.approx(0.0, abs=0.01)


def test_best_accuracy_threshold() -> None:
    assert best_accuracy_threshold([0.9, 1.0], [0.1, 0.2]) == (pytest.approx(0.55), 1.0)
    # t in (0.3, 0.4]: FAR 1/4, FRR 0 -> 0.875; t in (0.6, 0.7]: FAR 0, FRR 1/4 -> 0.875; (0.4, 0.6]: 0.75
    t, acc = best_accuracy_threshold([0.4, 0.7, 0.8, 0.9], [0.1, 0.2, 0.3, 0.6])
    assert acc == 0.875 and t == pytest.approx(0.35)  # the lowest of equally good ranges
    # equal weights: 1 genuine vs 3 impostors, each class counts half
    t, acc = best_accuracy_threshold([0.5], [0.6, 0.1, 0.2])
    assert acc == pytest.approx(1 - (1 / 3) / 2) and t == pytest.approx(0.35)


def test_threshold_for_far_is_smallest_with_far_at_most_target() -> None:
    impostor = np.arange(100) / 100  # 0.00 .. 0.99
    t = threshold_for_far(impostor, 0.05)
    assert t == np.nextafter(0.94, 1)  # 0.95 .. 0.99 may match: 5 of 100
    far, _ = far_frr([1.0], impostor, [t, np.nextafter(t, 0)])
    assert far[0] == 0.05 and far[1] > 0.05
    assert threshold_for_far(impostor, 0.0) == np.nextafter(0.99, 1)
    assert threshold_for_far(impostor, 1.0) == 0.0
    # ties: the three 0.9s match together, so 2 allowed means above 0.9
    assert threshold_for_far([0.1, 0.9, 0.9, 0.9], 0.5) == np.nextafter(0.9, 1)


def test_open_set_threshold_per_draw_rate() -> None:
    impostor = np.linspace(0, 1, 100_001)[:-1]  # uniform on [0, 1): FAR(t) = 1 - t
    detail = open_set_threshold_detail(impostor, 0.1, 10)
    per_draw = 1 - 0.9 ** (1 / 10)
    assert detail.per_draw_far == pytest.approx(per_draw, rel=1e-12)
    assert detail.resolved and detail.expected_above == pytest.approx(per_draw * 100_000)
    assert detail.threshold == pytest.approx(1 - per_draw, abs=2e-5)
    # best of 10 uniform draws reaches t with chance 1 - t^10
    assert 1 - detail.threshold**10 == pytest.approx(0.1, abs=2e-4)
    assert open_set_threshold(impostor, 0.1, 1) == pytest.approx(0.9, abs=2e-5)
    assert stranger_chance(per_draw, 10) == pytest.approx(0.1, rel=1e-12)


def test_open_set_threshold_beyond_the_data_is_flagged_and_clamped(caplog: pytest.LogCaptureFixture) -> None:
    impostor = np.arange(100) / 1000  # 100 draws cannot resolve a per-draw FAR near 1e-4
    detail = open_set_threshold_detail(impostor, 0.01, 100)
    assert not detail.resolved and detail.expected_above < 1
    assert detail.threshold == np.nextafter(0.099, 1)
    with caplog.at_level(logging.WARNING, logger="service.calibration"):
        assert open_set_threshold(impostor, 0.01, 100) == detail.threshold
    assert "clamped" in caplog.text


def test_open_set_threshold_tiny_target_no_cancellation() -> None:
    detail = open_set_threshold_detail(np.zeros(10), 1e-12, 1_000_000)
    assert detail.per_draw_far == pytest.approx(1e-18, rel=1e-6)
    assert math.isfinite(detail.threshold)


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, 1.5])
def test_open_set_threshold_rejects_bad_targets(bad: float) -> None:
    with pytest.raises(ValueError):
        open_set_threshold_detail([0.1, 0.2], bad, 5)


def test_rates_refuse_non_finite_scores() -> None:
    with pytest.raises(ValueError, match="finite"):
        far_frr([np.nan], [0.1], [0.5])
    with pytest.raises(ValueError):
        equal_error_rate([], [0.1])
