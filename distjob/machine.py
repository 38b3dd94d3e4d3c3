"""This process's machine: its threads, cores and memory, and the device it computes on.

Linux's /proc says which threads the process runs (so init_horovod can find the ones
hvd.init() started, and lower Gloo's) and how much memory it holds; the measurements behind
compute_threads are in docs/performance.md.
"""
import os
import resource

import mxnet as mx

from .config import UserError
from .doctor import gpu_operator_error


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


def yield_cpu_to_compute(threads):
    """Run these (Gloo's transport) threads only on a core that has nothing else to run
    (SCHED_IDLE). Horovod 0.28's bundled Gloo busy-polls (pytorch/gloo#246): at normal
    priority, or even at nice 19, its spin takes the core from the compute a peer waits for.
    -> the ids of the threads lowered."""
    lowered = []
    for tid in threads:
        try:
            os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
            lowered.append(tid)
        except OSError:  # the thread has ended, or the OS does not allow it: leave it
            pass
    return lowered


def memory_mb():
    """-> (this process's peak resident memory, its proportional share now: pages it shares
    with other processes, as the ranks share the mapped ids, count once among them), in MB;
    the share is None where /proc cannot say."""
    def proc_kb(path, field):
        with open(path) as f:
            return next(int(line.split()[1]) for line in f if line.startswith(field))
    try:  # VmHWM: its own since it started; ru_maxrss keeps its parent's from before exec
        peak = proc_kb("/proc/self/status", "VmHWM:") / 1024
    except (OSError, StopIteration):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    try:
        pss = proc_kb("/proc/self/smaps_rollup", "Pss:") / 1024
    except (OSError, StopIteration):
        pss = None
    return peak, pss


def available_memory_bytes():
    """MemAvailable of /proc/meminfo, in bytes (what can be allocated without swapping), or None."""
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return None


def compute_threads(cores_per_worker):
    """OMP_NUM_THREADS for a CPU worker with this many cores of its own: all but one, at least 1.
    The worker's python thread dispatches the operators while MXNet's engine computes, and it
    needs a core of its own. launch/run.sh applies the same rule."""
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
