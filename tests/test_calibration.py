"""Calibration: threshold of best accuracy, Platt map, EER."""

import numpy as np
import pytest

from pbn_cli.answers import calibration


def test_platt_recovers_a_known_logistic_and_is_monotone():
    rng = np.random.default_rng(0)
    d = rng.uniform(0, 2, 20000)
    p_true = 1 / (1 + np.exp(4.0 * d - 4.0))
    same = rng.uniform(size=d.size) < p_true
    a, b = calibration.fit_platt(d, same)
    assert a == pytest.approx(4.0, rel=0.1) and b == pytest.approx(-4.0, rel=0.1)
    p = calibration.probability(np.linspace(0, 2, 50), a, b)
    assert np.all(np.diff(p) < 0)
    assert calibration.probability(1.0, a, b) == pytest.approx(0.5, abs=0.05)


def test_threshold_separates_separable_distances():
    d = np.array([0.1, 0.2, 0.3, 0.9, 1.0, 1.1])
    same = np.array([True, True, True, False, False, False])
    t, acc = calibration.best_threshold(d, same)
    assert 0.3 < t < 0.9 and acc == 1.0
    assert calibration.balanced_accuracy(d, same, t) == 1.0
    assert calibration.equal_error_rate(d, same) == 0.0


def test_balanced_pairs_are_balanced_and_labelled():
    artists = np.array(list("aaabbbcccdde"), dtype=object)
    i, j, same = calibration.balanced_pairs(artists, seed=0)
    assert same.sum() == (~same).sum() == 3 + 3 + 3 + 1
    assert np.array_equal(artists[i] == artists[j], same)
    assert (i != j).all()


def test_eer_of_overlapping_scores():
    d = np.array([0.1, 0.4, 0.5, 0.3, 0.6, 0.9])
    same = np.array([True, True, True, False, False, False])
    assert calibration.equal_error_rate(d, same) == pytest.approx(1 / 3)
