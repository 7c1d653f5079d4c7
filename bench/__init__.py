"""The harness: measurements, metrics and the `pgvar` command."""
