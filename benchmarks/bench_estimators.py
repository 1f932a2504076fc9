"""Gradient variance of the score-function estimators on real populations.

For one training batch of a real population (default: ``ev-similar``, whose
true regret is non-differentiable, and ``dc-different-different-lambda``), draws
the gradient estimate ``--draws`` times with fresh prediction samples and
reports the trace of its covariance for the paper's REINFORCE (Eq. 3/4) and the
lower-variance weighted REINFORCE, with the ratio to the paper's estimator on
the same (norm-form) objective.  Same model,
same batch, same number of environment samples per draw.

    python benchmarks/bench_estimators.py [--draws 40] [--q-plus-1 20]
"""
from __future__ import annotations

import argparse

import torch

from eq_envs.presets import build_population
from trainers.config import default_model
from trainers.estimators import estimate
from trainers.networks import build_public_model
from trainers.training import population_regret_fn

METHODS = [
    ("reinforce_paper (Eq. 3/4, power form)", {"estimator": "reinforce_paper"}, 1),
    ("reinforce_paper (norm form)", {"estimator": "reinforce_paper", "form": "norm"}, 1),
    ("reinforce_weighted, deterministic baseline", {"estimator": "reinforce_weighted"}, 1),
    ("reinforce_weighted, leave-one-out, K=4", {"estimator": "reinforce_weighted", "baseline": "loo"}, 4),
]


def grad_trace_variance(model, draws: int, num_samples: int, **kw) -> tuple[float, float]:
    """Trace of the covariance of the per-draw gradient, and the gradient norm of the mean."""
    params = [p for p in model.parameters() if p.requires_grad]
    out = []
    for _ in range(draws):
        model.zero_grad()
        estimate(model, num_samples=num_samples, **kw).surrogate.backward()
        out.append(torch.cat([p.grad.reshape(-1) for p in params]).double())
    g = torch.stack(out)
    return float(g.var(0).sum()), float(g.mean(0).norm())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--draws", type=int, default=40, help="gradient draws per estimator")
    ap.add_argument("--q-plus-1", type=float, default=20.0, dest="qp1", help="equitable exponent q+1")
    ap.add_argument("--populations", nargs="+", default=["ev-similar", "dc-different-different-lambda"])
    args = ap.parse_args()
    q = args.qp1 - 1.0
    print(f"q+1 = {args.qp1:g}, {args.draws} draws per estimator; variance = trace of the gradient covariance "
          f"per draw (environment samples per draw = M x B x K)")
    print("| population | estimator | samples/draw | gradient variance | ratio to paper (norm form) | norm of mean gradient |")
    print("|---|---|---:|---:|---:|---:|")
    for name in args.populations:
        torch.manual_seed(0)
        pop = build_population(name)
        model = build_public_model(default_model(name))
        index = torch.arange(min(128, pop.num_steps))
        x, y = pop.observation(index), pop.truth(index).float()
        fn = population_regret_fn(pop, index)
        ref = None
        for label, kw, K in METHODS:
            var, norm = grad_trace_variance(model, args.draws, K, x=x, regret_fn=fn, q=q, num_agents=pop.num_agents,
                                            y_true=y, **kw)
            n = pop.num_agents * len(index) * K
            # Ratios compare estimators of the same objective (the norm form); the power form
            # sum C^(q+1) is another objective whose gradient scale is ~C^q larger.
            if kw.get("form") == "norm":
                ref = var
            ratio = "n/a (other objective scale)" if ref is None else f"{var / ref:.3g}"
            print(f"| {name} | {label} | {n:,} | {var:.4g} | {ratio} | {norm:.4g} |")


if __name__ == "__main__":
    main()
