"""The `pgvar` command: the top of the house, composing the harness (bench/) and the report (reports/).

Nothing in envs/, estimators/, bench/ or reports/ imports this package (tests/test_layers.py)."""
