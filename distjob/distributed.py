"""Horovod helpers: which device this rank uses, which rows it trains on, rank-tagged logs,
Gloo's threads kept off the compute's cores.

The Horovod steps themselves (init, broadcast, DistributedTrainer) stay in train.py.
"""
import logging
import os
import sys

import horovod.mxnet as hvd
import mxnet as mx
import numpy as np

from .config import UserError
from .doctor import gpu_operator_error

log = logging.getLogger("distjob")


def setup_logging(rank, size):
    """Every line says which rank wrote it: `[rank 1/4] ...`."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter(f"%(asctime)s [rank {rank}/{size}] %(message)s", "%H:%M:%S"))
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False


def native_threads():
    """Ids of this process's OS threads (Linux); an empty set where /proc has none."""
    try:
        return {int(tid) for tid in os.listdir("/proc/self/task")}
    except OSError:
        return set()


def creation_order(tids):
    """Thread ids in the order the threads started, for threads started close together: ids
    grow by one per new thread, and after pid_max they start again from the bottom. So
    the first-started id is the one after the widest gap, going round the circle."""
    tids = sorted(tids)
    try:
        with open("/proc/sys/kernel/pid_max") as f:
            pid_max = int(f.read())
    except OSError:
        return tids
    gaps = [(tid - tids[i - 1]) % pid_max for i, tid in enumerate(tids)]  # gaps[0]: round the end
    first = max(range(len(tids)), key=gaps.__getitem__, default=0)
    return tids[first:] + tids[:first]


def gloo_threads(threads_before_init):
    """Ids of the Gloo transport threads that hvd.init() started (Linux; [] without Gloo).

    hvd.init() starts Horovod's background thread first, and that thread starts Gloo's.
    (Where each thread waits cannot tell them apart: a spinning Gloo loop is never seen waiting.)
    """
    if not hvd.gloo_enabled():
        return []
    return creation_order(native_threads() - threads_before_init)[1:]


def shorten_horovod_cycle():
    """Before hvd.init(): a 0.1 ms Horovod cycle where the launcher starts more than one worker,
    unless HOROVOD_CYCLE_TIME is set. -> the cycle time in ms that hvd.init() will use.

    Horovod's background thread starts collectives once a cycle (1 ms by default), so an
    allreduce whose last gradient misses a cycle waits for the next: about half of all steps
    did (Horovod timeline). With 0.1 ms, -np 2 ran 1.03-1.10x faster at 1024 per worker and
    1.22-1.31x at 64 (the default batch), one core each and floating (python -m distjob.bench).
    A single worker waits for nobody, and there the shorter cycle only wakes the thread more
    often: 0.80-0.94x as fast.
    """
    size = os.environ.get("HOROVOD_SIZE") or os.environ.get("OMPI_COMM_WORLD_SIZE") or "1"
    if "HOROVOD_CYCLE_TIME" not in os.environ and int(size) > 1:
        os.environ["HOROVOD_CYCLE_TIME"] = "0.1"
    try:
        return float(os.environ.get("HOROVOD_CYCLE_TIME", 1))
    except ValueError:
        raise UserError(f"HOROVOD_CYCLE_TIME={os.environ['HOROVOD_CYCLE_TIME']}: not a number of "
                        "milliseconds (unset it for distjob's default)") from None


def yield_cpu_to_compute(threads_before_init):
    """Run Gloo's transport threads only on a core that has nothing else to run (SCHED_IDLE).

    Horovod 0.28's bundled Gloo busy-polls: its TCP event loop calls epoll_wait, which returns
    at once, over and over, while a peer's data waits to be received (perf; pytorch/gloo#246).
    Where every core runs a worker, that spin takes the core from the compute the peer is
    waiting for. On 2 cores, -np 2 ran at 0.6-0.9x of -np 1 with the loop at normal priority;
    at nice 19 the loop still took slices of a busy core, and about 1 allreduce in 10
    took 3-6.5 ms instead of 0.2 ms (Horovod timeline). Under SCHED_IDLE none did, and -np 2
    ran 1.08-1.19x faster than at nice 19 (python -m distjob.bench measures all three).
    The loop still runs whenever a core is free, as it is while this worker waits for the
    allreduce. Horovod's background thread, which schedules the collectives, keeps its
    priority. Under MPI (no Gloo) nothing changes. -> the ids of the threads lowered.
    """
    lowered = []
    for tid in gloo_threads(threads_before_init):
        try:
            os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
            lowered.append(tid)
        except OSError:  # the thread has ended, or the OS does not allow it: leave it
            pass
    return lowered


def compute_threads(cores_per_worker):
    """OMP_NUM_THREADS for a CPU worker with this many cores of its own: all but one, at least 1.

    The worker's python thread dispatches about 0.5 ms of operators per step while MXNet's
    engine thread computes, and it needs a core of its own: on 2 cores, one worker with 1
    OpenMP thread ran 1.45-1.8x faster than with 2 (python -m distjob.bench, -np 1 rows).
    launch/run.sh applies the same rule.
    """
    return max(1, cores_per_worker - 1)


def cpu_cores():
    """The CPU cores this process may run on, as text: '0-3', '0,2' ('all' where the OS cannot say)."""
    try:
        cores = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return "all"
    runs = []  # [first, last] of each run of consecutive cores
    for core in cores:
        if runs and core == runs[-1][1] + 1:
            runs[-1][1] = core
        else:
            runs.append([core, core])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def pick_context(choice, local_rank):
    """One device per process: GPU number local_rank (one rank per GPU on each host), or CPU."""
    n_gpus = mx.context.num_gpus()
    if choice == "gpu" or (choice == "auto" and n_gpus > 0):
        if local_rank >= n_gpus:
            raise UserError(f"--ctx gpu: this host has {n_gpus} GPU(s), but local rank {local_rank} "
                            "needs one of its own; start at most one worker per GPU")
        ctx = mx.gpu(local_rank)
        check_gpu_runs(ctx, f"--ctx {choice}")
        return ctx
    return mx.cpu()


def check_gpu_runs(ctx, flag):
    """Run one operator on ctx now, so a GPU this MXNet cannot use fails here, in one line.

    A wheel without kernels for the card (mxnet-cu112 has none for an H100's compute
    capability 9.0) fails only at its first GPU operator, deep inside the first forward.
    """
    reason = gpu_operator_error(ctx)
    if reason is not None:
        raise UserError(f"{flag}: MXNet cannot run on {ctx}: {reason} "
                        "(`python -m distjob.doctor` shows which GPUs this MXNet build has kernels "
                        "for; --ctx cpu trains on the CPU)")


def shard_rows(n_rows, epoch, seed, rank, size):
    """This rank's rows for one epoch: a fresh global shuffle per epoch, dealt round-robin.

    Every rank gets exactly n_rows // size rows (the few left over sit out this epoch),
    so every rank runs the same number of steps: Horovod stalls on uneven shards.
    """
    order = np.random.default_rng([seed, epoch]).permutation(n_rows)
    per_rank = n_rows // size
    return order[rank:per_rank * size:size]
