"""Per-agent context tables indexed by a shared clock."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor


class ContextTable:
    """Ragged per-agent sequences of a context value (workload, energy need, ...).

    Agents share one clock: at time-step ``t`` of the current split, agent ``m``
    uses its ``(t mod N_m)``-th value, where ``N_m`` is the length of its sequence.
    Stored as a padded ``[M, N_max]`` tensor plus lengths so a gather over a whole
    batch is one tensor operation.
    """

    def __init__(self, sequences: Sequence[Sequence[float]] | Tensor, name: str = "value",
                 dtype: torch.dtype = torch.float64) -> None:
        if isinstance(sequences, Tensor):
            seqs = [sequences[m] for m in range(sequences.shape[0])]
        else:
            seqs = [torch.as_tensor(np.asarray(s, dtype=np.float64)) for s in sequences]
        if len(seqs) == 0:
            raise ValueError(f"context '{name}': no agents given")
        lengths = [int(s.numel()) for s in seqs]
        for m, n in enumerate(lengths):
            if n == 0:
                raise ValueError(f"context '{name}': agent {m} has an empty sequence")
        width = max(lengths)
        values = torch.zeros(len(seqs), width, dtype=dtype)
        for m, s in enumerate(seqs):
            flat = s.reshape(-1).to(dtype)
            if not torch.isfinite(flat).all():
                bad = int((~torch.isfinite(flat)).nonzero()[0])
                raise ValueError(f"context '{name}': agent {m}, position {bad} is NaN or inf")
            values[m, : flat.numel()] = flat
        self.name = name
        self.values = values
        self.lengths = torch.tensor(lengths, dtype=torch.long)

    @property
    def num_agents(self) -> int:
        return int(self.values.shape[0])

    def at(self, index: Tensor) -> Tensor:
        """Values ``[M, B]`` at clock positions ``index`` ``[B]``."""
        index = torch.as_tensor(index, dtype=torch.long)
        pos = index.unsqueeze(0) % self.lengths.unsqueeze(1)  # [M, B]
        return torch.gather(self.values, 1, pos)

    def sequences(self) -> list[np.ndarray]:
        """The per-agent sequences as numpy arrays (unpadded)."""
        return [self.values[m, : int(n)].numpy().copy() for m, n in enumerate(self.lengths)]


def agent_values(values: float | Sequence[float] | Tensor, num_agents: int, name: str) -> Tensor:
    """A per-agent constant (``lambda``, charging rate, ...) as a float64 ``[M]`` tensor."""
    t = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
    if t.numel() == 1:
        t = t.expand(num_agents).clone()
    if t.numel() != num_agents:
        raise ValueError(f"{name}: got {t.numel()} values for {num_agents} agents; accepted: one value or one per agent")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name}: contains NaN or inf")
    return t
