"""Gradient estimators: pure functions (policy, θ, batch, **options) → [M, P]."""

from estimators import group, score  # noqa: F401  (registers the estimators)
from estimators.registry import ESTIMATORS, EstimatorSpec, resolve_estimator

__all__ = ["ESTIMATORS", "EstimatorSpec", "resolve_estimator"]
