"""Problems: environments, policy classes, parameters θ and explicit objectives."""

from envs import bandits, control, gym_vector, lqr, tabular  # noqa: F401  (register the problems, gym:<id>)
from envs.problem import PROBLEMS, Batch, Capability, Problem, ProblemConfig, make_problem
from envs.spec import ConfigError

__all__ = ["PROBLEMS", "Batch", "Capability", "ConfigError", "Problem", "ProblemConfig", "make_problem"]
