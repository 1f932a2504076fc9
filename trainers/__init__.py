"""Training of equitable public models: networks and stochastic heads, objectives, gradient estimators.

Import the submodules directly (``trainers.networks``, ``trainers.objectives``,
``trainers.estimators``); this package module stays light on purpose.
"""
