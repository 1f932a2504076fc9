"""Train / validation / test splits of a population's data under three protocols.

A population's data are the hours of one signal series (where a prediction
starts: the public input is the ``lookback`` values before, the truth the
``horizon`` values from there) and, per agent, a context sequence (workloads,
energy needs, ...).  Both are split the same way:

* ``protocol="time"`` (our default) -- time order.  The series' first
  ``train_fraction`` of rows are the training rows, the rest the test rows; the
  last ``val_fraction`` of the training rows are the validation rows.  Every
  window lies inside its split's rows, so a held-out prediction never reads or
  scores an hour of another split.  Each agent's context sequence (given as
  its paper "train" part followed by its "test" part) is cut the same way: the
  test part stays the test part, the last ``val_fraction`` of the train part is
  validation.
* ``protocol="random"`` -- the paper's App. A.3.1 ("within each agent, the
  dataset is randomly partitioned"): each agent's context sequence is randomly
  partitioned (seeded per agent), and so are the hours: the prediction hours of
  the whole series are shuffled with ``seed`` and cut into the same numbers of
  validation and test hours as the time protocol gives; every other hour is a
  training hour.  Held-out
  hours then lie between training hours, and their input and truth windows
  overlap training windows: the protocol measures interpolation, not
  forecasting later months, which is why ``time`` is our default.

* ``protocol="blocked"`` -- time order for the test split (the same test rows
  and contexts as ``time``), but the validation rows are :data:`VAL_BLOCKS`
  blocks spread evenly over the training months instead of one stretch at
  their end: the training part is cut into ``VAL_BLOCKS`` equal segments and
  the last ``val_fraction`` of each is a validation block (blocked
  cross-validation's hold-out for series, Bergmeir, Hyndman & Koo 2018, "A
  note on the validity of cross-validation for evaluating autoregressive time
  series prediction").  A window must lie inside its split's rows, so the
  windows that straddle a block edge belong to neither split.  Why: on the
  time split the adjacent stretch ranks models unlike the test months do
  (``benchmarks/explore_val_test_transfer.py``); a validation set drawn from
  every season is the standard remedy.  docs/fresh_check.md (fourth check)
  measures it.

Held-out sizes are equal under all protocols, except that ``blocked`` loses
the windows across its block edges (its validation split has about a sixth
fewer windows), so they differ in which hours and which context values are
held out.  ``val_fraction = 0`` gives no
validation split (the training split is then the whole train part).
"""
from __future__ import annotations

import math

import numpy as np

SPLITS = ("train", "val", "test")
PROTOCOLS = ("time", "random", "blocked")
#: Share of the training data (rows and each agent's contexts) held out for validation by default.
VAL_FRACTION = 0.15
#: Validation blocks of ``protocol="blocked"`` (fixed before any run: about one every two months of a year).
VAL_BLOCKS = 6


def check_split_settings(split: str, protocol: str, val_fraction: float) -> None:
    """Raise a one-line ``ValueError`` for an unknown split or protocol or a bad fraction."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r}; accepted: {', '.join(SPLITS)}")
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol={protocol!r}; accepted: {', '.join(PROTOCOLS)}")
    if not (isinstance(val_fraction, (int, float)) and 0.0 <= float(val_fraction) < 0.5):
        raise ValueError(f"val_fraction={val_fraction!r}; accepted: a number in [0, 0.5)")
    if split == "val" and float(val_fraction) == 0.0:
        raise ValueError("split='val' needs val_fraction > 0 (there is no validation split with val_fraction=0)")


def val_count(n_train: int, val_fraction: float) -> int:
    """Validation items taken from the end of ``n_train`` training items: ``round(f * n)``, at least 1 when ``f > 0``,
    leaving at least one training item."""
    if val_fraction <= 0 or n_train < 2:
        return 0
    return int(min(max(1, round(val_fraction * n_train)), n_train - 1))


def _part(n_train: int, n_test: int, split: str, val_fraction: float) -> tuple[int, int]:
    """``[start, stop)`` of ``split`` in the time-ordered list ``train | test`` (train = train' | val)."""
    n_val = val_count(n_train, val_fraction)
    return {"train": (0, n_train - n_val), "val": (n_train - n_val, n_train),
            "test": (n_train, n_train + n_test)}[split]


def val_blocks(n_train: int, n_val: int) -> np.ndarray:
    """Boolean mask over ``n_train`` items: ``n_val`` of them in :data:`VAL_BLOCKS` blocks, each the end of one of
    as many equal segments (fewer blocks when ``n_val`` is smaller); ``protocol="blocked"``'s validation items."""
    mask = np.zeros(n_train, dtype=bool)
    if n_val <= 0:
        return mask
    segments = np.array_split(np.arange(n_train), min(VAL_BLOCKS, n_val))
    sizes = [len(b) for b in np.array_split(np.arange(n_val), len(segments))]
    for seg, size in zip(segments, sizes):
        mask[seg[len(seg) - size:]] = True
    return mask


def item_indices(n_train: int, n_test: int, split: str, protocol: str, val_fraction: float,
                 rng: np.random.Generator | None = None) -> np.ndarray:
    """Indices (sorted) of ``split`` among ``n_train + n_test`` items listed as train part then test part.

    ``time``: the test part is the test split, the last ``val_fraction`` of the
    train part the validation split.  ``blocked``: the same, but the validation
    items are :func:`val_blocks` of the train part.  ``random``: the same split
    sizes drawn by a random permutation from ``rng`` (required).
    """
    check_split_settings(split, protocol, val_fraction)
    start, stop = _part(n_train, n_test, split, val_fraction)
    if protocol == "time" or (protocol == "blocked" and split == "test"):
        return np.arange(start, stop)
    if protocol == "blocked":
        in_val = val_blocks(n_train, val_count(n_train, val_fraction))
        return np.flatnonzero(in_val if split == "val" else ~in_val)
    if rng is None:
        raise ValueError("protocol='random' needs a seeded random generator")
    return np.sort(rng.permutation(n_train + n_test)[start:stop])


def signal_positions(n_rows: int, train_fraction: float, lookback: int, horizon: int, split: str,
                     protocol: str = "time", val_fraction: float = VAL_FRACTION, seed: int = 0) -> np.ndarray:
    """Rows of the series where ``split``'s predictions start (sorted, int64).

    ``time``: rows ``[0, k)`` with ``k = floor(n_rows * train_fraction)`` are
    training rows (the last ``val_fraction`` of them validation rows), ``[k,
    n_rows)`` test rows; a position ``t`` belongs to a split when its whole
    window ``[t - lookback, t + horizon)`` lies in the split's rows.
    ``random``: every position of the series with a full window, shuffled with
    ``seed``: as many test and validation positions as ``time`` gives, the rest training.
    ``blocked``: test rows as ``time``; the validation rows are :func:`val_blocks`
    of the training rows, and a position belongs to a split when its whole
    window lies in that split's rows.
    """
    check_split_settings(split, protocol, val_fraction)
    k = min(max(math.floor(n_rows * float(train_fraction) + 1e-9), 1), n_rows - 1)
    n_val_rows = val_count(k, val_fraction)
    bounds = {"train": (0, k - n_val_rows), "val": (k - n_val_rows, k), "test": (k, n_rows)}

    def window_starts(lo: int, hi: int) -> np.ndarray:
        return np.arange(lo + lookback, hi - horizon + 1, dtype=np.int64)

    if protocol == "time" or (protocol == "blocked" and split == "test"):
        return window_starts(*bounds[split])
    if protocol == "blocked":
        rows = np.zeros(n_rows, dtype=bool)
        in_val = val_blocks(k, n_val_rows)
        rows[:k] = in_val if split == "val" else ~in_val
        # a window [t - lookback, t + horizon) is inside when all its rows are: a sliding sum over the row mask
        inside = np.convolve(rows.astype(np.int64), np.ones(lookback + horizon, dtype=np.int64), "valid")
        return np.flatnonzero(inside == lookback + horizon).astype(np.int64) + lookback
    sizes = {s: len(window_starts(*bounds[s])) for s in SPLITS}
    every = window_starts(0, n_rows)
    order = np.random.default_rng(seed).permutation(len(every))
    # test first, then validation, then training positions of the shuffled order (sizes as in "time")
    start = {"test": 0, "val": sizes["test"], "train": sizes["test"] + sizes["val"]}[split]
    stop = start + sizes[split] if split != "train" else len(every)
    return np.sort(every[order[start:stop]])


def agent_rngs(seed: int, num_agents: int) -> list[np.random.Generator]:
    """One independent generator per agent for the per-agent random partition (``seed`` and the agent index)."""
    return [np.random.default_rng([int(seed), m]) for m in range(num_agents)]


def split_contexts(train: list[list[np.ndarray]], test: list[list[np.ndarray]], split: str, protocol: str = "time",
                   val_fraction: float = VAL_FRACTION, seed: int = 0) -> list[list[np.ndarray]]:
    """``split``'s part of aligned per-agent context sequences.

    ``train[m]`` / ``test[m]``: agent ``m``'s aligned sequences (e.g. ``[needs,
    rates]``) of its paper train / test part.  All sequences of one agent are
    indexed alike (one partition per agent), so aligned contexts stay aligned.
    """
    out: list[list[np.ndarray]] = []
    for m, (tr, te, rng) in enumerate(zip(train, test, agent_rngs(seed, len(train)))):
        n_tr, n_te = len(tr[0]), len(te[0])
        if any(len(a) != n_tr for a in tr) or any(len(a) != n_te for a in te):
            raise ValueError(f"agent {m}: its context sequences differ in length; accepted: aligned sequences")
        if n_tr + n_te == 0:
            raise ValueError(f"agent {m}: no context values")
        idx = item_indices(n_tr, n_te, split, protocol, val_fraction, rng)
        if len(idx) == 0:
            raise ValueError(f"agent {m}: split {split!r} gets no context value of {n_tr} + {n_te} "
                             f"(protocol {protocol}, val_fraction {val_fraction})")
        out.append([np.concatenate([a, b])[idx] for a, b in zip(tr, te)])
    return out
