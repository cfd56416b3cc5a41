"""The scan's verdict rule: a gamma fitted to the other classes, a simulated calibration, Bonferroni."""

from __future__ import annotations

import math

import pytest
import torch

from bcu_gui.core.scan.calibration import bonferroni, fit_gamma, top_class_test


def test_gamma_fit_recovers_shape_and_scale_and_its_quantile_inverts_the_cdf():
    gen = torch.Generator().manual_seed(1)
    draws = torch._standard_gamma(torch.full((20_000,), 3.0, dtype=torch.float64), generator=gen) * 2.0
    g = fit_gamma(draws.tolist())
    assert g.shape == pytest.approx(3.0, rel=0.05) and g.scale == pytest.approx(2.0, rel=0.05)
    for q in (0.1, 0.5, 0.99):
        assert g.cdf(g.quantile(q)) == pytest.approx(q, abs=1e-6)
    assert g.cdf(3.0) + g.sf(3.0) == pytest.approx(1.0)
    assert fit_gamma([2.0, 2.0, 2.0]).shape > 1e3  # equal values: a very narrow gamma, no error


def test_null_sets_give_roughly_uniform_p_values():
    """Ten classes drawn from one gamma: p < alpha about alpha of the time (the naive MM-BD p-value is not)."""
    gen = torch.Generator().manual_seed(0)
    ps, naive = [], []
    for i in range(90):
        shape = (2.0, 8.0, 40.0)[i % 3]
        values = torch._standard_gamma(torch.full((10,), shape, dtype=torch.float64), generator=gen).tolist()
        test = top_class_test(values, simulations=300, seed=i)
        ps.append(test.p_value)
        naive.append(test.naive_p)
    assert sum(p < 0.05 for p in ps) / len(ps) <= 0.1
    assert 0.3 <= sum(p < 0.5 for p in ps) / len(ps) <= 0.7
    assert sum(p < 0.05 for p in naive) > sum(p < 0.05 for p in ps)  # why the calibration exists


def test_an_outlier_gets_a_tiny_p_value_and_passes_the_threshold():
    values = [1.0, 1.1, 0.9, 1.2, 1.0, 0.95, 1.05, 1.0, 1.1, 5.0]
    test = top_class_test(values, 0.01)
    assert test.cls == 9 and test.p_value <= 0.001
    assert 1.2 < test.threshold() < 5.0  # the line lies between the ordinary classes and the outlier
    calm = top_class_test(values[:9] + [1.15], 0.01)
    assert calm.p_value > 0.05 and calm.threshold() > 1.15


def test_the_test_is_scale_free_and_seeded():
    values = [3.0, 4.0, 3.5, 2.5, 9.0, 3.2, 2.9, 3.8]
    a, b = top_class_test(values), top_class_test([v * 7 for v in values])
    assert a.p_value == b.p_value and a.threshold() * 7 == pytest.approx(b.threshold(), rel=1e-6)
    with pytest.raises(ValueError):
        top_class_test([1.0, 2.0])


def test_bonferroni_takes_the_smallest_and_multiplies():
    assert bonferroni([0.2, 0.004, 0.5]) == (1, pytest.approx(0.012))
    assert bonferroni([0.9, 0.8]) == (1, 1.0)
    assert math.isclose(bonferroni([0.001])[1], 0.001)
