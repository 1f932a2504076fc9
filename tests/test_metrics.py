"""Equity metrics on hand-computed cases."""
import math

import numpy as np
import pytest

from trainers.metrics import equity_metrics


def test_hand_computed_case() -> None:
    m = equity_metrics([1.0, 2.0, 3.0, 6.0], names=["a", "b", "c", "d"], mse=0.5)
    assert m["mean"] == 3.0
    assert m["variance"] == pytest.approx(((2**2) + 1 + 0 + 9) / 4)  # 3.5
    # percentiles (linear): p95 = 3 + 0.85*3 = 5.55, p5 = 1 + 0.15*1 = 1.15
    assert m["c95_c5"] == pytest.approx(5.55 - 1.15)
    assert m["worst"] == 6.0 and m["worst_agent"] == "d"
    p = np.array([1, 2, 3, 6]) / 12
    assert m["entropy"] == pytest.approx(float(-(p * np.log(p)).sum()))
    assert m["jain"] == pytest.approx(144 / (4 * 50))
    assert m["mse"] == 0.5


def test_equal_agents_are_perfectly_equitable() -> None:
    m = equity_metrics([0.7] * 5)
    assert m["variance"] == 0 and m["c95_c5"] == 0 and m["jain"] == pytest.approx(1.0)
    assert m["entropy"] == pytest.approx(math.log(5)) and m["entropy_ratio"] == pytest.approx(1.0)
    z = equity_metrics([0.0, 0.0])
    assert z["jain"] == 1.0 and z["entropy_ratio"] == pytest.approx(1.0)


def test_bad_regrets_rejected() -> None:
    with pytest.raises(ValueError, match="NaN or inf at agents \\[1\\]"):
        equity_metrics([1.0, float("nan")])
    with pytest.raises(ValueError, match="negative regret"):
        equity_metrics([1.0, -1.0])
