"""The sampled reference's defaults (bench.reference), in a module that imports nothing, so that `pgvar --help`
shows them without importing torch."""

DEFAULT_SAMPLES = 2**17  # trajectories
DEFAULT_BATCH_SIZE = 64  # trajectories per reference batch (RLOO's leave-one-out mean over 63 others)
KINDS = ("auto", "exact", "sampled")
CACHE_ENV = "PGVAR_CACHE_DIR"
