"""The sampled reference's defaults (bench.reference) and the chunk workers' (bench.sampling), in a module that
imports nothing, so that `pgvar --help` shows them without importing torch."""

DEFAULT_SAMPLES = 2**17  # trajectories
DEFAULT_BATCH_SIZE = 64  # trajectories per reference batch (RLOO's leave-one-out mean over 63 others)
KINDS = ("auto", "exact", "sampled")
CACHE_ENV = "PGVAR_CACHE_DIR"
# Chunk workers by default: one process per core, at most 2 (measured on the 2-core machine, CartPole N = 32,
# M = 500: 2 one-thread processes 0.9–2.0× one, by load; one process on 2 intra-op threads 0.75–0.88× one thread,
# and up to 1/36 of it under load in an earlier session).
DEFAULT_CHUNK_WORKERS = 2
WORKERS_ENV = "PGVAR_CHUNK_WORKERS"  # overrides the default (`pgvar measure --chunk-workers` overrides both)
