"""Gradient estimators: pure functions (policy, θ, batch, **options) → [M, P]."""

from estimators import (  # noqa: F401  (registers the estimators)
    actor_critic,
    deterministic,
    exact,
    group,
    natural,
    off_policy,
    score,
)
from estimators.registry import ESTIMATORS, Estimator, resolve_estimator

__all__ = ["ESTIMATORS", "Estimator", "resolve_estimator"]
