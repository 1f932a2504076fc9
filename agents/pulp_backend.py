"""PuLP backend: agents whose decision is a (mixed-integer) linear program.

A new agent kind writes its optimisation model once, for one instance, in
:meth:`PulpAgentGroup.formulate` (a ``pulp.LpProblem`` and the list of decision
variables) and its batched cost in torch; the backend solves the model for
every agent x sample instance, collects the decisions into a tensor and scores
them like any other agent.

How it solves (:class:`PulpAgentGroup` arguments):

* **HiGHS in memory** (``highspy``) by default: the PuLP model is copied into a
  ``highspy.Highs`` object (columns, rows, bounds, integrality) and solved
  in-process -- no model file, no solver subprocess as with CBC.
* **Model re-use**: if the subclass also defines :meth:`PulpAgentGroup.objective`
  (the objective coefficients of the decision variables for a signal), the
  constraints are built once per distinct context and every further instance
  with that context only changes the objective (``changeColsCost``) and
  re-solves from the previous basis.  The objective must then be the only
  thing that depends on the signal (checked on the first instance of every context).
* **Processes**: with ``workers > 1`` and at least ``min_parallel`` instances
  per call, the instances are cut into contiguous per-agent chunks and solved
  by a pool of forked processes (each starts with the models the parent
  process has built so far; the models a worker builds stay in that worker).
* ``solver=`` a ``pulp.LpSolver`` (e.g. :func:`cbc_solver`) solves every
  instance through PuLP with that solver instead, as before (slow; kept for
  solvers HiGHS cannot replace and for the benchmark).

``benchmarks/bench_pulp.py`` measures solves per second on the home-battery LP
of ``docs/examples/home_battery.py``; BENCHMARKS.md has the numbers.
"""
from __future__ import annotations

import multiprocessing
import os
import warnings
from abc import abstractmethod
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pulp
import torch
from torch import Tensor

from agents.base import AgentGroup, Context
from agents.context import ContextTable
from agents.ev_charging import SLOT_TOLERANCE

try:  # HiGHS is a dependency (setup.cfg); the import guard keeps CBC usable where a wheel is missing
    import highspy
    try:  # the bare binding: no per-object callback set-up and no banner on stdout (highspy.Highs prints one)
        from highspy._core import _Highs as _HighsSolver
    except ImportError:  # pragma: no cover - other highspy layouts
        _HighsSolver = highspy.Highs
except ImportError:  # pragma: no cover - exercised only without the wheel
    highspy = None

#: Instances solved in one call below which no process pool is started (forking costs more than it saves).
MIN_PARALLEL = 256
#: New contexts whose models are built in the parent before a process pool forks (the workers inherit them).
PREBUILD = 256
#: Distinct contexts whose HiGHS models a group keeps for re-use (least recently used dropped first).
MODEL_CACHE_SIZE = 4096


def cbc_solver() -> pulp.LpSolver:
    """CBC as bundled with PuLP 3 (its deprecation notice about PuLP 4 is silenced here)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return pulp.PULP_CBC_CMD(msg=False)


#: Kept for callers of the earlier name.
default_solver = cbc_solver


class SolverError(RuntimeError):
    """A PuLP model did not solve to optimality."""


class _HighsModel:
    """One PuLP problem copied into an in-memory HiGHS model; re-solvable with a new objective."""

    def __init__(self, problem: pulp.LpProblem, decision_vars: Sequence[pulp.LpVariable]) -> None:
        variables = problem.variables()
        col = {v.name: j for j, v in enumerate(variables)}
        n = len(variables)
        inf = highspy.kHighsInf
        lp = highspy.HighsLp()
        lp.num_col_ = n
        lp.col_lower_ = np.array([-inf if v.lowBound is None else v.lowBound for v in variables], dtype=np.float64)
        lp.col_upper_ = np.array([inf if v.upBound is None else v.upBound for v in variables], dtype=np.float64)
        cost = np.zeros(n)
        for v, a in problem.objective.items():
            cost[col[v.name]] = a
        lp.col_cost_ = cost
        if problem.sense == pulp.LpMaximize:
            lp.sense_ = highspy.ObjSense.kMaximize
        lower, upper, starts, index, value = [], [], [0], [], []
        cons = problem.constraints  # PuLP >= 3.3: a callable giving a list (its dict mapping is deprecated)
        for con in (cons() if callable(cons) else cons.values()):
            rhs = -float(con.constant)
            lower.append(rhs if con.sense in (pulp.LpConstraintEQ, pulp.LpConstraintGE) else -inf)
            upper.append(rhs if con.sense in (pulp.LpConstraintEQ, pulp.LpConstraintLE) else inf)
            for v, a in con.items():
                index.append(col[v.name])
                value.append(a)
            starts.append(len(index))
        lp.num_row_ = len(lower)
        lp.row_lower_ = np.array(lower, dtype=np.float64)
        lp.row_upper_ = np.array(upper, dtype=np.float64)
        lp.a_matrix_.format_ = highspy.MatrixFormat.kRowwise
        lp.a_matrix_.start_ = np.array(starts, dtype=np.int32)
        lp.a_matrix_.index_ = np.array(index, dtype=np.int32)
        lp.a_matrix_.value_ = np.array(value, dtype=np.float64)
        if any(v.cat == pulp.LpInteger for v in variables):
            lp.integrality_ = [highspy.HighsVarType.kInteger if v.cat == pulp.LpInteger
                               else highspy.HighsVarType.kContinuous for v in variables]
        self.h = _HighsSolver()
        self.h.setOptionValue("output_flag", False)
        self.h.setOptionValue("threads", 1)
        self.h.passModel(lp)
        self.decision_cols = np.array([col[v.name] for v in decision_vars], dtype=np.int32)

    def solve(self, who: str, describe) -> np.ndarray:
        self.h.run()
        status = self.h.getModelStatus()
        if status != highspy.HighsModelStatus.kOptimal:
            raise SolverError(f"{who}: HiGHS status {self.h.modelStatusToString(status)!r} for {describe()}")
        return np.asarray(self.h.getSolution().col_value, dtype=np.float64)[self.decision_cols]

    def set_objective(self, coefficients: np.ndarray) -> None:
        self.h.changeColsCost(len(self.decision_cols), self.decision_cols, np.asarray(coefficients, dtype=np.float64))


class PulpAgentGroup(AgentGroup):
    """Base for agents decided by a PuLP model, one solve per (agent, sample).

    Subclasses implement :meth:`context`, :meth:`formulate` and :meth:`cost`,
    set ``self.decision_size`` (see :data:`REQUIRED_ATTRIBUTES`) and may
    implement :meth:`objective` for model re-use (module docstring).

    Args:
        num_agents, horizon, names: as :class:`agents.base.AgentGroup`.
        solver: ``None`` (default) solves with HiGHS in memory; a
            ``pulp.LpSolver`` solves through PuLP with that solver.
        workers: processes for one call (``None``: every core the process may
            use; 1: in-process).
        min_parallel: fewest instances in a call for which processes are used.
    """

    #: Decision variables per instance (the decision tensor's last axis): set it in ``__init__``.
    decision_size: int
    REQUIRED_ATTRIBUTES = {
        **AgentGroup.REQUIRED_ATTRIBUTES,
        "decision_size": "the number of decision variables per instance (an int >= 1: the length of the "
                         "variable list formulate() returns and the decision tensor's last axis), set in __init__",
    }

    def __init__(self, num_agents: int, horizon: int, names: list[str] | None = None,
                 solver: pulp.LpSolver | None = None, workers: int | None = None,
                 min_parallel: int = MIN_PARALLEL) -> None:
        super().__init__(num_agents, horizon, names)
        if solver is None and highspy is None:  # pragma: no cover
            solver = cbc_solver()
        self.solver = solver
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        self.workers = cores if workers is None else int(workers)
        if self.workers < 1:
            raise ValueError(f"{type(self).__name__}: workers={workers!r}; accepted: an int >= 1 or None")
        self.min_parallel = int(min_parallel)

    def check_attributes(self) -> None:
        super().check_attributes()
        d = self.decision_size
        if not isinstance(d, int) or isinstance(d, bool) or d < 1:
            raise TypeError(f"{type(self).__name__}: decision_size={d!r}; accepted: an int >= 1 "
                            "(decision variables per instance)")

    @abstractmethod
    def formulate(self, signal: np.ndarray, ctx: dict[str, np.ndarray]) -> tuple[pulp.LpProblem, list[pulp.LpVariable]]:
        """The model for one instance: ``signal`` ``[H]`` and this instance's context values."""

    def objective(self, signal: np.ndarray, ctx: dict[str, np.ndarray]) -> np.ndarray | None:
        """Optional: objective coefficients of the decision variables for ``signal`` (others cost 0).

        Return ``None`` (the default) when the objective is not of that form;
        every instance is then formulated afresh.
        """
        return None

    # ------------------------------------------------------------- solving
    def _describe(self, signal: np.ndarray, ctx: dict[str, np.ndarray]):
        return lambda: (f"signal={np.round(signal, 6).tolist()}, "
                        f"context={ {k: np.asarray(v).tolist() for k, v in ctx.items()} }")

    def solve_one(self, signal: np.ndarray, ctx: dict[str, np.ndarray]) -> np.ndarray:
        """Solve one instance afresh; returns the decision variables' values."""
        problem, variables = self.formulate(signal, ctx)
        self._check_variables(variables)
        if self.solver is None:
            return _HighsModel(problem, variables).solve(self.kind, self._describe(signal, ctx))
        status = problem.solve(self.solver)
        if pulp.LpStatus[status] != "Optimal":
            raise SolverError(f"{self.kind}: PuLP status {pulp.LpStatus[status]!r} for "
                              f"{self._describe(signal, ctx)()}")
        return np.array([v.value() or 0.0 for v in variables], dtype=np.float64)

    def _check_variables(self, variables: Sequence[pulp.LpVariable]) -> None:
        if len(variables) != self.decision_size:
            raise TypeError(f"{type(self).__name__}: formulate() returned {len(variables)} decision variables but "
                            f"decision_size = {self.decision_size}; accepted: equal numbers")

    def solve_many(self, signal: np.ndarray, ctx: dict[str, np.ndarray]) -> np.ndarray:
        """Solve ``N`` instances in-process: ``signal`` ``[N, H]``, context arrays ``[N, ...]`` -> ``[N, D]``.

        Re-uses one HiGHS model per distinct context when :meth:`objective` is defined; the models
        stay with the group across calls (a forked worker starts with the parent's models).
        """
        n = signal.shape[0]
        out = np.empty((n, self.decision_size), dtype=np.float64)
        for i in range(n):
            c = {k: v[i] for k, v in ctx.items()}
            model = self._model_for(signal[i], c)
            out[i] = self.solve_one(signal[i], c) if model is None else \
                model.solve(self.kind, self._describe(signal[i], c))
        return out

    def _model_for(self, signal: np.ndarray, ctx: dict[str, np.ndarray]) -> _HighsModel | None:
        """The cached HiGHS model of this context with the objective of ``signal``; None without re-use."""
        coef = self.objective(signal, ctx) if self.solver is None else None
        if coef is None:
            return None
        cache = self.__dict__.setdefault("_models", OrderedDict())
        key = _context_key(ctx)
        model = cache.get(key)
        if model is None:
            problem, variables = self.formulate(signal, ctx)
            self._check_variables(variables)
            model = _HighsModel(problem, variables)
            self._check_objective(model, coef)
            if len(cache) >= MODEL_CACHE_SIZE:
                cache.popitem(last=False)  # least recently used
            cache[key] = model
        else:
            cache.move_to_end(key)
            model.set_objective(coef)
        return model

    def _prebuild(self, signal: np.ndarray, ctx: dict[str, np.ndarray], limit: int = PREBUILD) -> None:
        """Build the models of up to ``limit`` new contexts in this process, so every forked worker re-uses them."""
        if self.solver is not None:
            return
        cache = self.__dict__.setdefault("_models", OrderedDict())
        new: dict[bytes, int] = {}
        for i in range(signal.shape[0]):
            key = _context_key({k: v[i] for k, v in ctx.items()})
            if key not in cache and key not in new:
                if len(new) >= limit:
                    return  # many distinct contexts (e.g. one per session): the workers build their own
                new[key] = i
        for i in new.values():
            self._model_for(signal[i], {k: v[i] for k, v in ctx.items()})

    def __getstate__(self) -> dict:
        # HiGHS models are process-local (and not picklable): a copy starts with an empty cache
        return {k: v for k, v in self.__dict__.items() if k != "_models"}

    def _check_objective(self, model: _HighsModel, coef: np.ndarray) -> None:
        # objective() must reproduce formulate()'s objective, and nothing else may carry a cost
        full = np.asarray(model.h.getLp().col_cost_, dtype=np.float64)
        mine = np.zeros_like(full)
        mine[model.decision_cols] = np.asarray(coef, dtype=np.float64)
        if mine.shape != full.shape or not np.allclose(mine, full, rtol=1e-9, atol=1e-12):
            raise TypeError(f"{type(self).__name__}: objective() does not match the objective of formulate() "
                            "(it must give the cost of each decision variable, all other variables costing 0); "
                            "fix objective() or return None from it")

    def decide(self, pred: Tensor, ctx: Context) -> Tensor:
        M, B = next(iter(ctx.values())).shape[:2]
        signal = pred.detach().expand(M, B, pred.shape[-1]).cpu().double().numpy().reshape(M * B, -1)
        flat = {k: v.detach().cpu().numpy().reshape(M * B, *v.shape[2:]) for k, v in ctx.items()}
        n = M * B
        workers = min(self.workers, n // max(self.min_parallel // 2, 1)) if n >= self.min_parallel else 1
        if workers <= 1:
            out = self.solve_many(signal, flat)
        else:
            self._prebuild(signal, flat)
            bounds = np.linspace(0, n, workers + 1).astype(int)
            chunks = [(signal[a:b], {k: v[a:b] for k, v in flat.items()}) for a, b in zip(bounds[:-1], bounds[1:])]
            global _ACTIVE
            _ACTIVE = self
            try:  # forked workers inherit this group (it need not be picklable)
                with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as ex:
                    out = np.concatenate(list(ex.map(_solve_chunk, chunks)))
            finally:
                _ACTIVE = None
        return torch.from_numpy(out.reshape(M, B, self.decision_size))


_ACTIVE: PulpAgentGroup | None = None


def _context_key(ctx: dict[str, np.ndarray]) -> bytes:
    return b"".join(np.ascontiguousarray(v).tobytes() for v in ctx.values())


def _solve_chunk(chunk: tuple[np.ndarray, dict[str, np.ndarray]]) -> np.ndarray:
    assert _ACTIVE is not None
    return _ACTIVE.solve_many(*chunk)


class SlotMILPAgent(PulpAgentGroup):
    """General slot scheduling as a MILP: per-slot power caps and unavailable slots.

    Energy per charged slot is ``e_t = rate * cap_t`` (``cap_t`` in (0, 1] is the
    agent's per-slot power cap as a fraction of its rate, 0 where unavailable):

        min  sum_t E_t e_t x_t   s.t.  sum_t e_t x_t >= min(need, sum_t e_t),  x_t in {0,1}

    With every ``cap_t = 1`` this is exactly :class:`agents.ev_charging.EVChargingAgent`
    (the k cheapest slots plus any negative ones), which the tests check.

    Args:
        needs: per-agent sequences of energy needed (>= 0).
        rates: per-agent sequences (aligned with ``needs``) or one value per agent.
        caps: ``[M, T]`` per-slot cap fractions in [0, 1] (default all 1).
        windows: optional per-agent sequences of available slots from the start.
        solver, workers: see :class:`PulpAgentGroup`.
    """

    kind = "ev_milp"

    def __init__(self, needs: Sequence[Sequence[float]], rates: Sequence | float, horizon: int = 12,
                 caps: np.ndarray | None = None, windows: Sequence[Sequence[float]] | None = None,
                 names: list[str] | None = None, solver: pulp.LpSolver | None = None,
                 workers: int | None = None) -> None:
        self.needs = ContextTable(needs, name="need")
        super().__init__(self.needs.num_agents, horizon, names, solver, workers)
        if isinstance(rates, (int, float)):
            rates = [[float(rates)]] * self.num_agents
        self.rates = ContextTable([np.atleast_1d(np.asarray(r, dtype=np.float64)) for r in rates], name="rate")
        caps = np.ones((self.num_agents, horizon)) if caps is None else np.asarray(caps, dtype=np.float64)
        if caps.shape != (self.num_agents, horizon) or not np.isfinite(caps).all() or (caps < 0).any() or (caps > 1).any():
            raise ValueError(f"{self.kind}: caps has shape {caps.shape}; accepted: [{self.num_agents}, {horizon}] "
                             "fractions in [0, 1]")
        self.caps = torch.from_numpy(caps)
        self.windows = None if windows is None else ContextTable(windows, name="window")
        self.decision_size = horizon

    def context_lengths(self) -> list[int]:
        return [int(n) for n in self.needs.lengths]

    def context(self, index: Tensor) -> dict[str, Tensor]:
        need, rate = self.needs.at(index), self.rates.at(index)
        caps = self.caps.unsqueeze(1).expand(-1, len(index), -1).clone()  # [M, B, T]
        if self.windows is not None:
            avail = torch.clamp(torch.floor(self.windows.at(index)), 1, self.horizon)
            caps = torch.where(torch.arange(self.horizon).view(1, 1, -1) < avail.unsqueeze(-1), caps,
                               torch.zeros_like(caps))
        return {"need": need, "rate": rate, "slot_energy": rate.unsqueeze(-1) * caps}

    def formulate(self, signal: np.ndarray, ctx: dict[str, np.ndarray]) -> tuple[pulp.LpProblem, list[pulp.LpVariable]]:
        e = ctx["slot_energy"]
        T = len(signal)
        problem = pulp.LpProblem("slot_schedule", pulp.LpMinimize)
        x = [problem.add_variable(f"x{t}", cat=pulp.LpBinary) for t in range(T)]
        problem += pulp.lpSum(float(signal[t] * e[t]) * x[t] for t in range(T))
        target = min(float(ctx["need"]), float(e.sum())) - SLOT_TOLERANCE * float(ctx["rate"])
        problem += pulp.lpSum(float(e[t]) * x[t] for t in range(T)) >= target
        for t in range(T):
            if e[t] == 0:
                problem += x[t] == 0
        return problem, x

    def objective(self, signal: np.ndarray, ctx: dict[str, np.ndarray]) -> np.ndarray:
        return signal * ctx["slot_energy"]

    def cost(self, decision: Tensor, truth: Tensor, ctx: Context) -> Tensor:
        truth = self._broadcast(truth).to(torch.float64)
        return (decision * ctx["slot_energy"] * truth).sum(-1)
