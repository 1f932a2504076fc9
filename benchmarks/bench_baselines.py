"""Our equitable trainer against standard policy-gradient baselines (SB3 PPO and A2C) on the EV population.

Problem: ``ev-similar`` (70 EVs, true top-k regret, horizon 12) in the *shared*
layout, so an SB3 policy on ``eq_envs/PublicModel-v0`` and our public model have
the same input (the last 12 signal values) and output (the 12 predicted
values).  Every method gets the same environment-sample budget, counted in
**agent-decisions** (one agent deciding on one prediction and being scored):

* SB3: one env step = ``M = 70`` agent-decisions (every agent decides on the
  one action);
* ours: one batch = ``B`` clock positions x ``M`` agents x ``K`` samples per agent
  (``B = 128``); the Plain PM (MSE) is charged ``B x M`` per batch (it sees the
  same clock positions; it makes no decisions).

Methods:

* ``ours reinforce_paper`` -- the paper's Eq. 3/4 REINFORCE (power form ``sum_m Cbar_m^(q+1)``), K = 1.
  At ``q + 1 = 20`` its gradients are ~1e35, so Adam's second-moment estimate
  (``g^2``) overflows float32 to ``inf`` and every update is exactly 0: the model
  never leaves its initialisation (measured; see BENCHMARKS.md);
* ``ours reinforce_paper (norm form)`` -- the same estimator on the equivalent norm
  ``(sum_m Cbar_m^(q+1))^(1/(q+1))`` (same minimisers), which Adam can follow;
* ``ours reinforce_weighted`` -- our lower-variance REINFORCE, leave-one-out baseline, K = 4;
* ``ours mse`` -- the Plain PM, for reference;
* ``PPO util`` / ``A2C util`` -- SB3 ``MlpPolicy`` on the utilitarian reward (minus the mean regret);
* ``PPO equitable`` / ``A2C equitable`` -- the same on :class:`eq_envs.sb3_env.EquitableRewardWrapper`;
* and, outside the equal-budget comparison, ``ours reinforce_weighted`` at ``--long`` (default 10) times
  the budget, which takes about the wall time of one SB3 run at 1x (skipped with ``--quick``/``--methods``).

The pathwise estimator is not possible on EV: the regret of a top-k decision is
piecewise constant in the prediction (zero gradient almost everywhere).

Equity parameter: ``q + 1 = 20`` (the paper's EV study lists 20, 30, 40) for
every equitable run.  SB3 settings: library defaults except ``gamma = 0`` (the
problem is a contextual bandit: an action never changes later observations, so
the return is the immediate reward), observations and actions rescaled to
``[-1, 1]`` with Gymnasium's ``RescaleObservation``/``RescaleAction`` (SB3's
recommendation), episodes of 24 steps from random starts; the equitable
wrapper's running means are an EMA with rate 0.01.  No tuning was done for any
method.

Evaluation: held-out ``test`` split, per-step protocol
(:func:`trainers.evaluation.agent_regrets`: deterministic prediction at every
clock position -- the public model's mean, the SB3 policy's deterministic
action through :class:`eq_envs.sb3_env.PolicyPredictor` -- every agent decides,
regrets averaged per agent), then :func:`trainers.metrics.equity_metrics`.
Learning curves: the same evaluation at ``--checkpoints`` points of the budget
(and at initialisation).

Budget: default 2,000,000 agent-decisions per run (28,572 SB3 env steps, rounded
up to whole rollouts; 225 batches of K = 1, 55 of K = 4), 3 seeds, 7 methods
plus the 10x row: 15.5 minutes measured on 2 cores shared with other jobs, most of it in SB3 (whose env
step alone costs ~0.8 ms).  ``--quick``: 150,000
decisions, 1 seed, 2 checkpoints, PPO ``n_steps = 256`` (smoke run, < 2 min).

    python benchmarks/bench_baselines.py [--quick] [--budget 2000000] [--seeds 0 1 2] [--out benchmarks/results]

Writes ``baselines_runs.csv`` (one row per method x seed), ``baselines_curves.csv``,
``baselines_summary.csv``, ``baselines.md`` and ``baselines_curve.png`` into ``--out``.
"""
from __future__ import annotations

import argparse
import logging
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from eq_envs.presets import build_population
from eq_envs.sb3_env import EquitableRewardWrapper, PolicyPredictor, PublicModelEnv
from trainers.config import TrainConfig
from trainers.evaluation import agent_regrets
from trainers.metrics import equity_metrics
from trainers.networks import build_public_model
from trainers.training import train

POPULATION, LAYOUT, BATCH = "ev-similar", "shared", 128
LO, HI = np.float32(-1.0), np.float32(1.0)  # SB3 spaces (float32: no precision warning)
METRICS = ("variance", "mean", "c95_c5", "worst", "mse")

WEIGHTED = dict(objective="equitable", estimator="reinforce_weighted", baseline="loo", num_samples=4)
OURS = {
    "ours reinforce_paper": dict(objective="equitable", estimator="reinforce_paper", num_samples=1),
    "ours reinforce_paper (norm form)": dict(objective="equitable", estimator="reinforce_paper", form="norm",
                                             num_samples=1),
    "ours reinforce_weighted (loo, K=4)": WEIGHTED,
    "ours mse (Plain PM)": dict(objective="mse", num_samples=1),
}
#: Not an equal-budget row: our weighted trainer at ``--long`` times the budget (about SB3's wall time;
#: whole epochs of 6,109 x 70 x 4 decisions, so the budget is rounded to whole epochs).
LONG = "ours reinforce_weighted (loo, K=4), ~{n}x budget"
SB3 = {
    "PPO util": ("PPO", False),
    "PPO equitable": ("PPO", True),
    "A2C util": ("A2C", False),
    "A2C equitable": ("A2C", True),
}


def evaluate_predictor(model, test_pop) -> dict[str, float]:
    regrets, mse = agent_regrets(model, test_pop)
    m = equity_metrics(regrets, test_pop.agent_names, mse)
    return {k: float(m[k]) for k in METRICS}


def run_ours(name: str, seed: int, budget: int, checkpoints: int, q: float, test_pop, workdir: Path) -> tuple:
    kw = OURS.get(name, WEIGHTED)
    K, M = kw["num_samples"], test_pop.num_agents
    steps = build_population(POPULATION, split="train", layout=LAYOUT).num_steps
    full = math.ceil(steps / BATCH)  # batches in a whole epoch (the last one partial)
    per_ckpt = max(1, round(budget / (BATCH * M * K) / checkpoints))
    if per_ckpt <= full:  # one partial epoch of per_ckpt batches between checkpoints
        epochs, max_batches, ckpts = checkpoints, per_ckpt, list(range(1, checkpoints + 1))
    else:  # whole epochs; checkpoints spread over them
        epochs, max_batches = max(1, round(budget / (steps * M * K))), None
        ckpts = sorted({max(1, round(epochs * (i + 1) / checkpoints)) for i in range(checkpoints)})
    positions = min(steps, max_batches * BATCH) if max_batches is not None else steps  # per epoch
    cfg = TrainConfig(population=POPULATION, layout=LAYOUT, q=q, epochs=epochs, max_batches=max_batches,
                      batch_size=BATCH, seed=seed, **kw)
    run_dir = workdir / f"{''.join(c if c.isalnum() else '_' for c in name)}-{budget}-{seed}"
    torch.manual_seed(seed)
    init = build_public_model(cfg.model_config)  # same initialisation as train() (seeded the same way)
    curve = [(0, evaluate_predictor(init, test_pop)["variance"])]
    wall = 0.0
    for e in ckpts:
        t0 = time.perf_counter()
        res = train(cfg, run_dir, stop_after_epoch=e, tensorboard=False)
        wall += time.perf_counter() - t0
        curve.append((e * positions * M * K, evaluate_predictor(res.model, test_pop)["variance"]))
    final = evaluate_predictor(res.model, test_pop)
    return final, epochs * positions * M * K, wall, curve


def make_sb3_env(equitable: bool, q: float, seed: int):
    from gymnasium.wrappers import RescaleAction, RescaleObservation
    env = PublicModelEnv(POPULATION, episode_length=24, layout=LAYOUT)
    if equitable:
        env = EquitableRewardWrapper(env, q=q, rate=0.01)
    env = RescaleAction(RescaleObservation(env, LO, HI), LO, HI)
    env.reset(seed=seed)
    env.action_space.seed(seed)
    return env


def run_sb3(name: str, seed: int, budget: int, checkpoints: int, q: float, test_pop, quick: bool) -> tuple:
    from stable_baselines3 import A2C, PPO
    algo, equitable = SB3[name]
    env = make_sb3_env(equitable, q, seed)
    M = test_pop.num_agents
    if algo == "PPO":
        model = PPO("MlpPolicy", env, gamma=0.0, seed=seed, device="cpu", verbose=0,
                    **({"n_steps": 256} if quick else {}))
        unit = model.n_steps
    else:
        model = A2C("MlpPolicy", env, gamma=0.0, seed=seed, device="cpu", verbose=0)
        unit = model.n_steps
    total_steps = math.ceil(budget / M)
    predictor = PolicyPredictor(model, env)
    curve = [(0, evaluate_predictor(predictor, test_pop)["variance"])]
    wall = 0.0
    for e in range(1, checkpoints + 1):
        target = math.ceil(total_steps * e / checkpoints / unit) * unit  # whole rollouts
        t0 = time.perf_counter()
        model.learn(total_timesteps=max(0, target - model.num_timesteps), reset_num_timesteps=False)
        wall += time.perf_counter() - t0
        curve.append((model.num_timesteps * M, evaluate_predictor(predictor, test_pop)["variance"]))
    final = evaluate_predictor(predictor, test_pop)
    return final, model.num_timesteps * M, wall, curve


def fmt(mean: float, std: float) -> str:
    if not math.isfinite(mean):
        return "n/a"
    mag = max(abs(mean), 1e-12)
    digits = 3 if mag < 10 else (2 if mag < 100 else 1)
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: 150k decisions, 1 seed, 2 checkpoints")
    ap.add_argument("--budget", type=int, help="agent-decisions per run (default 2,000,000; --quick 150,000)")
    ap.add_argument("--seeds", type=int, nargs="+", help="seeds (default 0 1 2; --quick 0)")
    ap.add_argument("--checkpoints", type=int, help="learning-curve points (default 5; --quick 2)")
    ap.add_argument("--q-plus-1", type=float, default=20.0, dest="qp1", help="equitable exponent q+1 (default 20)")
    ap.add_argument("--methods", nargs="+", choices=[*OURS, *SB3, "long"], metavar="METHOD",
                    help=f"subset of methods (default all: {', '.join([*OURS, *SB3])}, and 'long': the --long row)")
    ap.add_argument("--long", type=int, default=10,
                    help="also run our weighted trainer at this multiple of the budget (not equal-budget; "
                         "default 10, about SB3's wall time; 0: skip)")
    ap.add_argument("--merge", action="store_true",
                    help="keep the other methods' rows already in --out (re-run only --methods) and rebuild the tables")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="output directory")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the machine is shared)")
    ap.add_argument("--replot", action="store_true", help="only redraw the PNG from --out's baselines_curves.csv")
    args = ap.parse_args()
    if args.replot:
        plot_curves(pd.read_csv(args.out / "baselines_curves.csv"), args.out / "baselines_curve.png", args.qp1)
        return
    torch.set_num_threads(args.threads)
    logging.getLogger("eq_envs.data").setLevel(logging.ERROR)
    budget = args.budget or (150_000 if args.quick else 2_000_000)
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    checkpoints = args.checkpoints or (2 if args.quick else 5)
    long_name = LONG.format(n=args.long)
    methods = list(args.methods or [*OURS, *SB3, *(["long"] if args.long and not args.quick else [])])
    methods = [long_name if m == "long" else m for m in methods]
    q = args.qp1 - 1.0
    args.out.mkdir(parents=True, exist_ok=True)
    test_pop = build_population(POPULATION, split="test", layout=LAYOUT)
    t_start = time.perf_counter()
    rows, curves = [], []
    with tempfile.TemporaryDirectory() as tmp:
        # warm-up (lazy imports, first-call allocations), not timed
        train(TrainConfig(population=POPULATION, layout=LAYOUT, q=q, epochs=1, max_batches=1, **WEIGHTED))
        for name in methods:
            for seed in seeds:
                if name == long_name:
                    final, used, wall, curve = run_ours(name, seed, budget * args.long, checkpoints, q, test_pop,
                                                        Path(tmp))
                elif name in OURS:
                    final, used, wall, curve = run_ours(name, seed, budget, checkpoints, q, test_pop, Path(tmp))
                else:
                    final, used, wall, curve = run_sb3(name, seed, budget, checkpoints, q, test_pop, args.quick)
                rows.append({"method": name, "seed": seed, **final, "samples": used, "wall_s": wall,
                             "samples_per_s": used / wall})
                curves += [{"method": name, "seed": seed, "samples": s, "variance": v} for s, v in curve]
                print(f"{name:36s} seed {seed}: variance {final['variance']:.3f} mean {final['mean']:.3f} "
                      f"worst {final['worst']:.3f} mse {final['mse']:.3f} | {used:,} decisions in {wall:.1f} s "
                      f"({used / wall:,.0f}/s)", flush=True)
    runs = pd.DataFrame(rows)
    curve_df = pd.DataFrame(curves)
    if args.merge and (args.out / "baselines_runs.csv").exists():
        old_runs = pd.read_csv(args.out / "baselines_runs.csv")
        old_curves = pd.read_csv(args.out / "baselines_curves.csv")

        def keep(df: pd.DataFrame) -> pd.Series:
            replaced = df["method"].isin(methods)
            if long_name in methods:  # any earlier --long row
                replaced |= df["method"].str.endswith("x budget")
            return ~replaced

        runs = pd.concat([old_runs[keep(old_runs)], runs], ignore_index=True)
        curve_df = pd.concat([old_curves[keep(old_curves)], curve_df], ignore_index=True)
    runs.to_csv(args.out / "baselines_runs.csv", index=False)
    curve_df.to_csv(args.out / "baselines_curves.csv", index=False)
    cols = [*METRICS, "samples", "wall_s", "samples_per_s"]
    g = runs.groupby("method", sort=False)[cols]
    mean, std = g.mean(), g.std(ddof=0).fillna(0.0)
    summary = pd.concat({"mean": mean, "std": std}, axis=1)
    summary.to_csv(args.out / "baselines_summary.csv")
    heads = ["held-out variance", "mean regret", "C95 − C5", "worst agent", "MSE"]
    lines = [f"`ev-similar`, shared layout, q + 1 = {args.qp1:g}, budget {budget:,} agent-decisions per run, "
             f"seeds {' '.join(map(str, seeds))} (mean ± std over seeds; held-out test split, per-step protocol)", "",
             "| method | " + " | ".join(heads) + " | agent-decisions used | train wall (s) | decisions/s |",
             "|---|" + "---:|" * (len(heads) + 3)]
    for name in mean.index:
        cells = [fmt(mean.loc[name, k], std.loc[name, k]) for k in METRICS]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {mean.loc[name, 'samples']:,.0f} | "
                     f"{mean.loc[name, 'wall_s']:.1f} | {mean.loc[name, 'samples_per_s']:,.0f} |")
    total = time.perf_counter() - t_start
    if long_name in set(runs["method"]):
        lines += ["", f"The last row is *not* equal-budget: our weighted trainer given about {args.long}x the budget "
                      "(whole epochs), which costs about the wall time of one SB3 run at 1x."]
    what = f"re-run of {', '.join(methods)}, merged with the other rows" if args.merge else "the whole run"
    lines += ["", f"Wall time {total / 60:.1f} min ({what}: training, evaluation and checkpoints)."]
    md = "\n".join(lines)
    (args.out / "baselines.md").write_text(md + "\n")
    print(md)
    plot_curves(curve_df, args.out / "baselines_curve.png", args.qp1)


def plot_curves(curve_df: pd.DataFrame, path: Path, qp1: float) -> None:
    """Held-out variance against agent-decisions: equal-budget methods (linear axis), and all runs (log axis)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    long_rows = curve_df["method"].str.endswith("x budget")
    for ax, df, logx in ((axes[0], curve_df[~long_rows], False), (axes[1], curve_df, True)):
        for i, (name, d) in enumerate(df.groupby("method", sort=False)):
            # seeds share checkpoint positions (SB3 rounds to whole rollouts, the same for every seed)
            agg = d.groupby("samples")["variance"].agg(["mean", "std"]).fillna(0.0)
            if logx:
                agg = agg[agg.index > 0]
            ls = "-" if name.startswith("ours") else "--"
            ax.plot(agg.index, agg["mean"], ls, marker="o", ms=3, color=f"C{i}", label=name)
            ax.fill_between(agg.index, agg["mean"] - agg["std"], agg["mean"] + agg["std"], color=f"C{i}", alpha=0.15)
        ax.set_xlabel("agent-decisions (environment samples)" + (", log scale" if logx else ""))
        ax.set_ylabel("held-out variance of per-agent regret")
        ax.set_yscale("log")
        if logx:
            ax.set_xscale("log")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_title("equal budget (first point: initialisation)", fontsize=10)
    axes[1].set_title("all runs, including the longer one", fontsize=10)
    axes[0].legend(fontsize=7)
    handles, labels = axes[1].get_legend_handles_labels()
    axes[1].legend(handles[-1:], labels[-1:], fontsize=7)
    fig.suptitle(f"ev-similar, shared layout, q+1 = {qp1:g}: held-out variance (mean ± std over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
