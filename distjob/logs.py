"""Rank-tagged logs: every line says which rank of how many wrote it."""
import logging
import sys

log = logging.getLogger("distjob")


def setup_logging(rank, size, level="info"):
    """Every line says which rank wrote it: `[rank 1/4] ...`."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter(f"%(asctime)s [rank {rank}/{size}] %(message)s", "%H:%M:%S"))
    log.handlers[:] = [handler]
    log.setLevel(level.upper())
    log.propagate = False
