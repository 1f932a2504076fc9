"""benchmarks/explore_val_test_transfer.py: validation-to-test rank agreement and win transfer, on hand-made runs."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pandas as pd
import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "explore_val_test_transfer.py"
_spec = importlib.util.spec_from_file_location("explore_val_test_transfer", _PATH)
transfer = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("explore_val_test_transfer", transfer)
_spec.loader.exec_module(transfer)


def _runs(protocol: str, val: list[float], test: list[float]) -> pd.DataFrame:
    """A Plain PM (first) and three regret-trained runs whose variance and worst agent are both ``val`` / ``test``."""
    return pd.DataFrame({"study": "s", "setting": "x", "protocol": protocol, "seed": 0,
                         "run_id": [f"{protocol}{i}" for i in range(4)],
                         "method": ["Plain PM", "Equitable PM", "Equitable PM", "Equitable PM"],
                         "val_variance": val, "val_worst": val, "variance": test, "worst": test})


def test_transfer_counts_and_rank_correlation_against_hand_computed_values() -> None:
    # run A wins on both splits, B on validation only, C on test only
    runs = pd.concat([_runs("time", [1.0, 0.5, 0.5, 2.0], [1.0, 0.5, 2.0, 0.5]),
                      _runs("random", [1.0, 0.5, 0.6, 2.0], [1.0, 0.5, 0.6, 2.0])])
    table = transfer.transfer_table(runs, ["protocol"]).set_index("protocol")
    time = table.loc["time"]
    assert (time["val_wins"], time["test_wins"], time["both_wins"]) == (2, 2, 1)
    assert time["transfer"] == pytest.approx(0.5) and time["base"] == pytest.approx(2 / 3)
    # ranks (ties averaged): validation 3, 1.5, 1.5, 4 and test 3, 1.5, 4, 1.5 -> Pearson of ranks -1.75 / 4.5
    assert time["rank_worst"] == pytest.approx(-1.75 / 4.5) and time["rank_var"] == pytest.approx(-1.75 / 4.5)
    same = table.loc["random"]
    assert same["transfer"] == pytest.approx(1.0) and same["rank_worst"] == pytest.approx(1.0)


def test_a_group_without_exactly_one_plain_pm_is_refused() -> None:
    runs = _runs("time", [1.0, 0.5, 0.5, 2.0], [1.0, 0.5, 2.0, 0.5]).assign(method="Equitable PM")
    with pytest.raises(ValueError, match="expected one Plain PM run, got 0"):
        transfer.transfer_table(runs, ["protocol"])
