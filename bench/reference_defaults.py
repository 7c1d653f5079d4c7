"""The sampled reference's defaults (bench.reference) and the chunk workers' (bench.sampling), in a module that
imports nothing, so that `pgvar --help` shows them without importing torch."""

DEFAULT_SAMPLES = 2**17  # trajectories
DEFAULT_BATCH_SIZE = 64  # trajectories per reference batch (RLOO's leave-one-out mean over 63 others)
KINDS = ("auto", "exact", "sampled")
CACHE_ENV = "PGVAR_CACHE_DIR"
# Chunk workers by default: one process per core, at most 2 (measured on 2 cores: 2 one-thread processes
# 1.6–1.9× one, while one process with 2 intra-op threads was 0.03–1.1× one thread).
DEFAULT_CHUNK_WORKERS = 2
WORKERS_ENV = "PGVAR_CHUNK_WORKERS"  # overrides the default (`pgvar measure --chunk-workers` overrides both)
