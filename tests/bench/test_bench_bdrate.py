"""BD-rate against the bjontegaard package's documented example (x265 presets, four points)."""

import math

import pytest

from vov.bench import summary

# The example in the bjontegaard package's README and example_usage.py
RATE_ANCHOR = [9487.76, 4593.60, 2486.44, 1358.24]
PSNR_ANCHOR = [40.037, 38.615, 36.845, 34.851]
RATE_TEST = [9787.80, 4469.00, 2451.52, 1356.24]
PSNR_TEST = [40.121, 38.651, 36.970, 34.987]
# PCHIP results for it; the BD-rate was also checked against an independent integration of
# scipy's PchipInterpolator over the overlapping PSNR range (same value to 1e-12)
BD_RATE_PCHIP = -4.4175
BD_PSNR_PCHIP = 0.1197


def curve(name, rates, values, metric="psnr-rgb", reached=None):
    return {"name": name, "results": {"bpp": list(rates), metric: list(values),
                                      "reached": reached or [True] * len(rates)}}


def test_package_reproduces_the_documented_example():
    import bjontegaard

    assert bjontegaard.bd_rate(RATE_ANCHOR, PSNR_ANCHOR, RATE_TEST, PSNR_TEST, method="pchip") == pytest.approx(
        BD_RATE_PCHIP, abs=1e-4)
    assert bjontegaard.bd_psnr(RATE_ANCHOR, PSNR_ANCHOR, RATE_TEST, PSNR_TEST, method="pchip") == pytest.approx(
        BD_PSNR_PCHIP, abs=1e-4)


def test_independent_pchip_integration_agrees():
    import numpy as np
    from scipy.interpolate import PchipInterpolator

    lo, hi = max(min(PSNR_ANCHOR), min(PSNR_TEST)), min(max(PSNR_ANCHOR), max(PSNR_TEST))

    def mean_log_rate(rates, psnrs):
        order = np.argsort(psnrs)
        f = PchipInterpolator(np.array(psnrs)[order], np.log10(np.array(rates))[order])
        return f.integrate(lo, hi) / (hi - lo)

    value = (10 ** (mean_log_rate(RATE_TEST, PSNR_TEST) - mean_log_rate(RATE_ANCHOR, PSNR_ANCHOR)) - 1) * 100
    assert value == pytest.approx(BD_RATE_PCHIP, abs=1e-4)


def test_summary_bd_rate_uses_pchip_with_the_baseline_as_anchor():
    anchor = curve("anchor", RATE_ANCHOR, PSNR_ANCHOR)
    test = curve("vov", RATE_TEST, PSNR_TEST)
    out = summary.bd_rate(anchor, test, "psnr-rgb")
    assert out["value"] == pytest.approx(BD_RATE_PCHIP, abs=1e-4)
    # swapping the roles changes the sign (not exactly the magnitude)
    assert summary.bd_rate(test, anchor, "psnr-rgb")["value"] > 0


def test_bd_rate_explains_when_it_cannot_be_computed():
    anchor = curve("JPEG", [0.2, 0.4, 0.8], [25, 30, 35])
    assert "overlap" in summary.bd_rate(anchor, curve("vov", [0.02, 0.05], [15, 18]), "psnr-rgb")["note"]
    assert "increase" in summary.bd_rate(anchor, curve("vov", [0.02, 0.05], [28, 26]), "psnr-rgb")["note"]
    one = curve("vov", [0.05, 0.05], [28, 28], reached=[True, False])  # one point, repeated
    assert "two" in summary.bd_rate(anchor, one, "psnr-rgb")["note"]


def test_values_at_fixed_rates_interpolate_inside_and_refuse_outside():
    c = curve("JPEG", [0.1, 0.2, 0.4], [24.0, 27.0, 30.0])
    mid = summary.at_rate(c, "psnr-rgb", math.sqrt(0.1 * 0.2))
    assert 24.0 < mid["value"] < 27.0
    assert summary.at_rate(c, "psnr-rgb", 0.2)["value"] == pytest.approx(27.0)
    low = summary.at_rate(c, "psnr-rgb", 0.02)
    assert low["value"] is None and "cannot reach" in low["note"]
    high = summary.at_rate(c, "psnr-rgb", 1.0)
    assert high["value"] is None and "highest" in high["note"]


def test_msssim_db():
    assert summary.msssim_db(0.9) == pytest.approx(10.0)
    assert summary.msssim_db(0.99) == pytest.approx(20.0)
