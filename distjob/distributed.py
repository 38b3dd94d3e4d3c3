"""Horovod helpers: which device this rank uses, which rows it trains on, rank-tagged logs.

The Horovod steps themselves (init, broadcast, DistributedTrainer) stay in train.py.
"""
import logging
import sys

import mxnet as mx
import numpy as np

from .config import UserError

log = logging.getLogger("distjob")


def setup_logging(rank, size):
    """Every line says which rank wrote it: `[rank 1/4] ...`."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter(f"%(asctime)s [rank {rank}/{size}] %(message)s", "%H:%M:%S"))
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False


def pick_context(choice, local_rank):
    """One device per process: GPU number local_rank (one rank per GPU on each host), or CPU."""
    n_gpus = mx.context.num_gpus()
    if choice == "gpu" or (choice == "auto" and n_gpus > 0):
        if local_rank >= n_gpus:
            raise UserError(f"--ctx gpu: this host has {n_gpus} GPU(s), but local rank {local_rank} "
                            "needs one of its own; start at most one worker per GPU")
        return mx.gpu(local_rank)
    return mx.cpu()


def shard_rows(n_rows, epoch, seed, rank, size):
    """This rank's rows for one epoch: a fresh global shuffle per epoch, dealt round-robin.

    Every rank gets exactly n_rows // size rows (the few left over sit out this epoch),
    so every rank runs the same number of steps: Horovod stalls on uneven shards.
    """
    order = np.random.default_rng([seed, epoch]).permutation(n_rows)
    per_rank = n_rows // size
    return order[rank:per_rank * size:size]
