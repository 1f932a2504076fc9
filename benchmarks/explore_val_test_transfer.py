"""Does the validation stretch rank models the way the held-out months do?  (issue 10, "why it fails")

Model selection (``trainers/model_selection.py``) can only deploy an Equitable PM
that beats the Plain PM on the test months if a model that beats it on
**validation** tends to beat it on test too.  This script measures that, from
the studies' ``per_run.csv`` files alone (no training), per split protocol:

* ``rank_worst`` / ``rank_var``: Spearman correlation, within each
  (study, setting, protocol, seed), between every run's validation and held-out
  worst-agent regret (variance); the median over groups.
* ``val_wins``: how many regret-trained runs beat their seed's Plain PM on
  validation (lower variance **and** worst agent); ``test_wins``: how many beat
  it on the held-out months; ``transfer``: the share of validation wins that are
  test wins too; ``base``: the share of test wins among all regret-trained runs
  (what a selection that ignores validation would get).

On the random partition validation and test are exchangeable draws of the same
months, so ``transfer`` shows what a faithful validation stretch gives; on the
time-ordered split the gap to it is the season shift between the last 15 % of
the training months and the test months.

    python benchmarks/explore_val_test_transfer.py docs/results/*_per_run.csv \
        docs/results/fresh_regions*/per_run.csv
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from trainers.reports import _plain_markdown  # noqa: E402

GROUP = ["study", "setting", "protocol", "seed"]


def _spearman(a: pd.Series, b: pd.Series) -> float:
    """Spearman's rank correlation (ties averaged); NaN for fewer than 3 runs or a constant column."""
    if len(a) < 3 or a.nunique() < 2 or b.nunique() < 2:
        return float("nan")
    return float(a.corr(b, method="spearman"))


def group_transfer(group: pd.DataFrame) -> dict:
    """Rank agreement and win transfer for one (study, setting, protocol, seed) group of runs."""
    plain = group[group["method"] == "Plain PM"]
    if len(plain) != 1:
        raise ValueError(f"{dict(zip(GROUP, group.iloc[0][GROUP]))}: expected one Plain PM run, got {len(plain)}")
    plain = plain.iloc[0]
    others = group[group["method"] != "Plain PM"]
    val_win = (others["val_variance"] < plain["val_variance"]) & (others["val_worst"] < plain["val_worst"])
    test_win = (others["variance"] < plain["variance"]) & (others["worst"] < plain["worst"])
    return {"runs": len(others), "val_wins": int(val_win.sum()), "test_wins": int(test_win.sum()),
            "both_wins": int((val_win & test_win).sum()),
            "rank_worst": _spearman(group["val_worst"], group["worst"]),
            "rank_var": _spearman(group["val_variance"], group["variance"])}


def transfer_table(runs: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Per-group measures summed (counts) or medianed (rank correlations) over the groups of ``by``."""
    rows = [dict(zip(GROUP, key), **group_transfer(g)) for key, g in runs.groupby(GROUP, sort=True)]
    per_group = pd.DataFrame(rows)
    out = per_group.groupby(by, sort=True).agg(
        groups=("seed", "size"), runs=("runs", "sum"), val_wins=("val_wins", "sum"),
        test_wins=("test_wins", "sum"), both_wins=("both_wins", "sum"),
        rank_worst=("rank_worst", "median"), rank_var=("rank_var", "median")).reset_index()
    out["transfer"] = out["both_wins"] / out["val_wins"].where(out["val_wins"] > 0)
    out["base"] = out["test_wins"] / out["runs"]
    return out


def load(paths: list[str]) -> pd.DataFrame:
    """The runs of every file; a region's fresh-check runs keep their setting names, which carry the region."""
    frames = []
    for p in paths:
        frame = pd.read_csv(p)
        missing = {"method", "variance", "worst", "val_variance", "val_worst", *GROUP} - set(frame.columns)
        if missing:
            raise SystemExit(f"{p}: missing columns {sorted(missing)}; expected a studies' per_run.csv")
        frames.append(frame)
    return pd.concat(frames, ignore_index=True).drop_duplicates(subset=GROUP + ["run_id"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("per_run", nargs="+", help="per_run.csv files of the studies (docs/results/*_per_run.csv)")
    parser.add_argument("--by", nargs="+", default=["protocol"], choices=GROUP[:3],
                        help="what to report per (default: protocol)")
    args = parser.parse_args(argv)
    missing = [p for p in args.per_run if not Path(p).is_file()]
    if missing:
        print(f"no such file: {missing[0]}; pass studies' per_run.csv files", file=sys.stderr)
        return 2
    table = transfer_table(load(args.per_run), args.by)
    print(_plain_markdown(table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
