"""Train / validation / test splits (time order and the paper's random partition) and the trade-off populations."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from eq_envs.presets import TRADEOFF_POPULATIONS, build_population, home_event_agents
from eq_envs.splits import VAL_BLOCKS, VAL_FRACTION, item_indices, signal_positions, split_contexts


def _rows(pop) -> set[int]:
    return set(pop.time_step(torch.arange(pop.num_steps)).reshape(-1).tolist())


def _windows(pop) -> set[int]:
    """Every signal row a split reads or scores (input window and horizon of each position)."""
    t = np.array(sorted(_rows(pop)))
    return set((t[:, None] + np.arange(-pop.lookback, pop.horizon)[None, :]).reshape(-1).tolist())


@pytest.mark.parametrize("layout", ["shared", "chunked"])
def test_time_protocol_val_is_the_end_of_training_and_never_touches_test(layout: str) -> None:
    tr, va, te = (build_population("ev-similar", split=s, layout=layout) for s in ("train", "val", "test"))
    # time order: every validation hour after every training hour, every test hour after every validation hour
    assert max(_rows(tr)) < min(_rows(va)) and max(_rows(va)) < min(_rows(te))
    # no window of one split reads or scores a row of another
    assert not (_windows(tr) & _windows(va)) and not (_windows(va) & _windows(te)) and not (_windows(tr) & _windows(te))
    # the validation rows are the last VAL_FRACTION of the paper's 70 % training rows (6132 of 8760)
    assert va.split_range == (6132 - round(VAL_FRACTION * 6132), 6132) and te.split_range[0] == 6132
    # each agent's contexts: validation = the tail of its paper train sequence, test = its paper test sequence
    full = build_population("ev-similar", split="train", val_fraction=0.0)
    for m in (0, 41, 69):
        whole = full.groups[0].needs[m]
        n_val = round(VAL_FRACTION * len(whole))
        np.testing.assert_array_equal(tr.groups[0].needs[m], whole[: len(whole) - n_val])
        np.testing.assert_array_equal(va.groups[0].needs[m], whole[len(whole) - n_val:])
    # val_fraction = 0: the training split is the paper's whole train part, and there is no validation split
    assert full.split_range == (0, 6132)
    with pytest.raises(ValueError, match="split='val' needs val_fraction > 0"):
        build_population("ev-similar", split="val", val_fraction=0.0)


def test_random_protocol_partitions_positions_and_contexts_with_time_split_sizes() -> None:
    kw = {"protocol": "random", "split_seed": 3}
    parts = {s: build_population("dc-similar-same-lambda", split=s, **kw) for s in ("train", "val", "test")}
    times = {s: build_population("dc-similar-same-lambda", split=s) for s in ("train", "val", "test")}
    rows = {s: _rows(p) for s, p in parts.items()}
    # a partition of the prediction hours: disjoint, same sizes as the time split, and interleaved in time
    assert not (rows["train"] & rows["val"]) and not (rows["train"] & rows["test"]) and not (rows["val"] & rows["test"])
    assert parts["val"].num_steps == times["val"].num_steps and parts["test"].num_steps == times["test"].num_steps
    # training gets every other hour (the time split loses the windows that straddle its boundaries)
    assert len(rows["train"] | rows["val"] | rows["test"]) == 8760 - 12 - 1 + 1
    assert min(rows["test"]) < max(rows["train"]) and min(rows["train"]) < max(rows["test"])
    # each agent's contexts: a per-agent partition of its train + test values (different agents, different draws)
    for m in (0, 49):
        pooled = np.sort(np.concatenate([times["train"].groups[0].workloads.sequences()[m],
                                         times["val"].groups[0].workloads.sequences()[m],
                                         times["test"].groups[0].workloads.sequences()[m]]))
        got = np.sort(np.concatenate([parts[s].groups[0].workloads.sequences()[m] for s in parts]))
        np.testing.assert_array_equal(got, pooled)
    # seeded: the same seed gives the same split, another seed another one
    again = build_population("dc-similar-same-lambda", split="test", **kw)
    assert _rows(again) == rows["test"]
    assert _rows(build_population("dc-similar-same-lambda", split="test", protocol="random", split_seed=4)) \
        != rows["test"]


def test_item_indices_and_signal_positions_oracles() -> None:
    # time: 10 train items, 4 test items, val 0.2 -> train 0..7, val 8..9, test 10..13
    assert item_indices(10, 4, "train", "time", 0.2).tolist() == list(range(8))
    assert item_indices(10, 4, "val", "time", 0.2).tolist() == [8, 9]
    assert item_indices(10, 4, "test", "time", 0.2).tolist() == [10, 11, 12, 13]
    rng = lambda: np.random.default_rng(0)  # noqa: E731
    got = [item_indices(10, 4, s, "random", 0.2, rng()) for s in ("train", "val", "test")]
    assert [len(g) for g in got] == [8, 2, 4] and sorted(np.concatenate(got).tolist()) == list(range(14))
    # 100 rows, 70 % train, val 0.1: train rows [0, 63), val [63, 70), test [70, 100); lookback 12, horizon 1
    assert signal_positions(100, 0.7, 12, 1, "train", val_fraction=0.1).tolist() == list(range(12, 63))
    assert signal_positions(100, 0.7, 12, 1, "val", val_fraction=0.1).tolist() == []  # 7 rows < 13
    assert signal_positions(100, 0.7, 12, 1, "test", val_fraction=0.1).tolist() == list(range(82, 100))
    with pytest.raises(ValueError, match="protocol='shuffled'; accepted: time, random, blocked"):
        signal_positions(100, 0.7, 12, 1, "train", protocol="shuffled")
    with pytest.raises(ValueError, match="differ in length"):
        split_contexts([[np.ones(3), np.ones(2)]], [[np.ones(1), np.ones(1)]], "train")


def test_blocked_protocol_oracles_spread_validation_and_keep_the_time_test_split() -> None:
    # 30 train items, 6 test, val 0.2 -> 6 validation items, one at the end of each of 6 segments of 5
    assert item_indices(30, 6, "val", "blocked", 0.2).tolist() == [4, 9, 14, 19, 24, 29]
    assert item_indices(30, 6, "train", "blocked", 0.2).tolist() == [i for i in range(30) if i % 5 != 4]
    assert item_indices(30, 6, "test", "blocked", 0.2).tolist() == list(range(30, 36))
    # fewer validation items than blocks: one block per item; 10 train items, val 0.2 -> 2 blocks of 1 (5 + 5)
    assert item_indices(10, 2, "val", "blocked", 0.2).tolist() == [4, 9]
    # rows: 1200 rows, 50 % train (600), val 0.2 -> 120 validation rows, 20 at the end of each 100-row segment
    lookback, horizon = 12, 4
    val_rows = {r for b in range(VAL_BLOCKS) for r in range(100 * b + 80, 100 * b + 100)}
    train_rows = set(range(600)) - val_rows
    got = {s: signal_positions(1200, 0.5, lookback, horizon, s, "blocked", 0.2) for s in ("train", "val", "test")}
    for split, rows in (("train", train_rows), ("val", val_rows)):
        # oracle: a position is in a split when every row of its window is one of the split's rows
        want = [t for t in range(lookback, 1200 - horizon + 1)
                if all(r in rows for r in range(t - lookback, t + horizon))]
        assert got[split].tolist() == want
    # a 20-row block holds 20 - 16 + 1 = 5 windows; training windows never touch a validation row
    assert len(got["val"]) == VAL_BLOCKS * 5
    assert got["test"].tolist() == signal_positions(1200, 0.5, lookback, horizon, "test", "time", 0.2).tolist()
    # on a real population: validation hours from every part of the training months, none read by a training
    # window, and the test split identical to the time protocol's
    tr, va, te = (build_population("ev-similar", split=s, protocol="blocked") for s in ("train", "val", "test"))
    assert not (_windows(tr) & _windows(va)) and not (_windows(va) & _windows(te)) and not (_windows(tr) & _windows(te))
    assert min(_rows(va)) < 6132 // VAL_BLOCKS and max(_rows(va)) > 6132 * (VAL_BLOCKS - 1) // VAL_BLOCKS
    assert _rows(te) == _rows(build_population("ev-similar", split="test"))
    for m in (0, 41):
        np.testing.assert_array_equal(te.groups[0].needs[m], build_population("ev-similar", split="test")
                                      .groups[0].needs[m])
        # each agent's train and validation contexts partition its paper train sequence, validation not only its tail
        whole = build_population("ev-similar", split="train", val_fraction=0.0).groups[0].needs[m]
        assert len(tr.groups[0].needs[m]) + len(va.groups[0].needs[m]) == len(whole)
        idx = item_indices(len(whole), 1, "val", "blocked", VAL_FRACTION)
        np.testing.assert_array_equal(va.groups[0].needs[m], whole[idx])
        assert idx[0] < len(whole) // 2


def test_layout_and_split_settings_reach_every_split_of_a_run() -> None:
    from trainers.config import ConfigError, TrainConfig

    cfg = TrainConfig(population="phone", protocol="random", split_seed=5, layout="chunked", val_fraction=0.2)
    for split in ("train", "val", "test"):
        pop = cfg.build_population(split)
        assert (pop.layout, pop.protocol, pop.split) == ("chunked", "random", split)
    with pytest.raises(ConfigError, match="val_fraction=0.7 is not accepted"):
        TrainConfig(val_fraction=0.7)
    with pytest.raises(ConfigError, match="protocol='interleaved' is not accepted; accepted: time, random, blocked"):
        TrainConfig(protocol="interleaved")
    with pytest.raises(ConfigError, match="split='val' needs val_fraction > 0"):
        TrainConfig(population="phone", val_fraction=0.0).build_population("val")


def test_home_populations_group_real_events_by_window_and_by_slots_needed() -> None:
    names, events, dropped = home_event_agents("window")
    pop = build_population("ev-home-windows", split="train", val_fraction=0.0)
    assert pop.num_agents == len(names) == len(events)
    g = pop.groups[0]
    idx = torch.arange(200)
    ctx = g.context(idx)
    for m, name in enumerate(names):
        a = int(name.rsplit("window", 1)[1])
        # one plug-in window per agent, and every kept event has a decision to make (k < available slots)
        assert (ctx["available"][m] == a).all() and (ctx["slots"][m] < a).all()
    assert sum(dropped.values()) > 0
    slots = build_population("ev-home-slots", split="test")
    ctx = slots.groups[0].context(idx)
    for m, name in enumerate(slots.agent_names):
        k = int(name.rsplit("slots", 1)[1])
        assert (ctx["slots"][m] == k).all() and (ctx["available"][m] == 12).all()
    assert len({int(n.rsplit("slots", 1)[1]) for n in slots.agent_names}) >= 8  # from 1 to 11 slots


@pytest.mark.parametrize("name", TRADEOFF_POPULATIONS)
def test_tradeoff_populations_build_in_both_layouts_and_protocols(name: str) -> None:
    for layout in ("shared", "chunked"):
        for protocol in ("time", "random"):
            pop = build_population(name, split="val", layout=layout, protocol=protocol)
            reg = pop.regret(pop.truth(torch.arange(4)) if layout == "chunked"
                             else pop.truth(torch.arange(4)).unsqueeze(0), torch.arange(4))
            assert reg.shape == (pop.num_agents, 4) and float(reg.abs().max()) == 0.0  # the truth: no regret
