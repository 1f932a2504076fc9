"""The paper's own "different agents" populations (authors' released ``.npy`` files as long CSV).

Files ``eq_envs/data/official/{dc,ev}_different_agents_{train,test}.csv`` with
columns ``agent, index, demand``: 50 data-centre agents (workload on the
paper's [0, 10]-scaled Azure series plus noise for 34 of them) and 70 EV agents
(kWh demands; 42 noised). How the un-noised agents derive from the raw data is
documented in :mod:`.workloads` and :mod:`.ev`.
"""

from __future__ import annotations

from os import PathLike

import numpy as np

from .errors import DataError
from .validation import (
    DATA_DIR,
    Report,
    numeric_column,
    read_csv_text,
    require_columns,
    resolve_path,
)

__all__ = ["OFFICIAL_KINDS", "OFFICIAL_N_AGENTS", "load_official_agents", "official_agents_file"]

OFFICIAL_KINDS = ("dc", "ev")
OFFICIAL_N_AGENTS = {"dc": 50, "ev": 70}
_SPLITS = ("train", "test")


def official_agents_file(kind: str, split: str):
    if kind not in OFFICIAL_KINDS:
        raise DataError(f"unknown kind {kind!r}", field="kind", accepted=OFFICIAL_KINDS)
    if split not in _SPLITS:
        raise DataError(f"unknown split {split!r}", field="split", accepted=_SPLITS)
    return DATA_DIR / "official" / f"{kind}_different_agents_{split}.csv"


def load_official_agents(
    kind: str = "dc", split: str = "train", path: str | PathLike[str] | None = None,
    num_agents: int | None = None,
) -> list[np.ndarray]:
    """One float64 array per agent, in agent order, values ordered by ``index``.

    Validation (DataError with file, row, field): columns ``agent, index,
    demand``; ``agent`` and ``index`` integers >= 0; agent ids contiguous from 0;
    each agent's indices exactly 0..n-1 (no gaps, no duplicates; row order in
    the file is free); ``demand`` finite and >= 0.  The released files cut a
    series into contiguous agents with ``np.array_split``, so agents' lengths
    differ by at most one, and there are ``num_agents`` of them (default: the
    paper's 50 DC / 70 EV agents, also for a ``path``): a file cut short
    (fewer agents, or a last agent shorter than the others) is a DataError.
    Give ``num_agents`` for a file in this format with another count.
    """
    bundled = official_agents_file(kind, split) if path is None else None
    if path is not None and kind not in OFFICIAL_KINDS:
        raise DataError(f"unknown kind {kind!r}", field="kind", accepted=OFFICIAL_KINDS)
    p = resolve_path(path, bundled, what="agents file")
    rep = Report(p.name)
    df = read_csv_text(p)
    require_columns(df, ("agent", "index", "demand"), p)
    agent, _ = numeric_column(df, "agent", p, allow_negative=False)
    index, _ = numeric_column(df, "index", p, allow_negative=False)
    for name, v in (("agent", agent), ("index", index)):
        frac = v != np.round(v)
        if frac.any():
            i = int(np.argmax(frac))
            raise DataError(f"non-integer {name} {v[i]}", file=p, row=i + 1, field=name, accepted="integers >= 0")
    demand, _ = numeric_column(df, "demand", p, allow_negative=False)
    agent_i, index_i = agent.astype(np.int64), index.astype(np.int64)
    ids = np.unique(agent_i)
    if not np.array_equal(ids, np.arange(len(ids))):
        gap = int(np.setdiff1d(np.arange(ids.max() + 1), ids)[0])
        raise DataError(f"agent ids are not contiguous from 0 (agent {gap} is missing)", file=p, field="agent",
                        accepted="agent ids 0..M-1")
    order = np.lexsort((index_i, agent_i))
    if not np.array_equal(order, np.arange(len(order))):
        rep.info("rows were not sorted by (agent, index); reordered")
    out = []
    for a in ids:
        rows = order[agent_i[order] == a]
        idx = index_i[rows]
        expect = np.arange(len(idx))
        if not np.array_equal(idx, expect):
            j = int(np.argmax(idx != expect))
            r = int(rows[j])
            if j > 0 and idx[j] == idx[j - 1]:
                msg = f"agent {a}: duplicated index {idx[j]}"
            else:
                msg = f"agent {a}: index {idx[j]} where {expect[j]} was expected (gap)"
            raise DataError(msg, file=p, row=r + 1, field="index", accepted="indices 0..n-1 per agent, each once")
        out.append(demand[rows].copy())
    expected = OFFICIAL_N_AGENTS[kind] if num_agents is None else int(num_agents)
    if len(out) != expected:
        raise DataError(f"{len(out)} agents (file cut short?)", file=p, field="agent",
                        accepted=f"{expected} agents" + ("" if num_agents is not None else
                                                        f" (the paper's {kind} population; or pass num_agents)"))
    lengths = np.array([len(a) for a in out])
    if lengths.max() - lengths.min() > 1:
        a = int(np.argmin(lengths))
        others = np.delete(lengths, a)
        raise DataError(f"agent {a} has {lengths[a]} values where the others have {others.min()}-{others.max()} "
                        f"(file cut short?)", file=p, field="index",
                        accepted="agents of equal length up to one value (np.array_split of one series)")
    return out
