"""The Horovod world and what its ranks do together: the one way into Horovod (init_horovod),
which rows each rank trains on, and what every rank must decide together: to stop for an
error or a signal, or to checkpoint now.

The other Horovod steps (broadcast, DistributedTrainer) stay in train.py. The measurements
behind the settings here are in docs/performance.md.
"""
import atexit
import contextlib
import functools
import logging
import os
import signal
import socket
import sys
import threading
from dataclasses import dataclass

import horovod.mxnet as hvd
import mxnet as mx
import numpy as np

from .config import UserError, run_main
from .hosts import check_hostname
from .machine import creation_order, native_threads, yield_cpu_to_compute


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

    Horovod starts collectives once a cycle (1 ms by default), so an allreduce whose last
    gradient just misses a cycle waits for the next; a single worker waits for nobody, and
    there a shorter cycle only wakes Horovod's thread more often.
    """
    size = os.environ.get("HOROVOD_SIZE") or os.environ.get("OMPI_COMM_WORLD_SIZE") or "1"
    if "HOROVOD_CYCLE_TIME" not in os.environ and int(size) > 1:
        os.environ["HOROVOD_CYCLE_TIME"] = "0.1"
    try:
        return float(os.environ.get("HOROVOD_CYCLE_TIME", 1))
    except ValueError:
        raise UserError(f"HOROVOD_CYCLE_TIME={os.environ['HOROVOD_CYCLE_TIME']}: not a number of "
                        "milliseconds (unset it for distjob's default)") from None


@dataclass(frozen=True)
class HorovodWorld:
    """What init_horovod set up: this process's place in the job, and the settings to log."""
    rank: int
    local_rank: int
    size: int
    cycle_ms: float     # Horovod's cycle time, which hvd.init() read
    gloo_threads: tuple  # ids of the Gloo transport threads hvd.init() started
    idle_threads: tuple  # those now run under SCHED_IDLE


@functools.cache
def init_horovod(gloo_sched_idle=True):
    """The one way into Horovod: every setting Horovod reads at init is made, and this host's
    name checked, before hvd.init(); Gloo's threads are lowered right after it starts them. Cached: Horovod initializes
    once per process, so a second call (compare trains several runs) returns the same world.
    gloo_sched_idle=False leaves Gloo's threads as Horovod starts them (the bench compares)."""
    cycle_ms = shorten_horovod_cycle()  # with peers, an allreduce need not wait 1 ms to start
    check_hostname()  # before Gloo: a hostname other hosts cannot reach fails at connect
    threads_before_init = native_threads()
    hvd.init()
    gloo = tuple(gloo_threads(threads_before_init))
    idle = tuple(yield_cpu_to_compute(gloo)) if gloo_sched_idle else ()
    return HorovodWorld(hvd.rank(), hvd.local_rank(), hvd.size(), cycle_ms, gloo, idle)


def run_horovod_main(run, *args):
    """config.run_main for a command that starts Horovod, and its exit: Python's exit handlers run
    (Horovod's shutdown and MPI_Finalize, TensorBoard's last write), the C++ static destructors do not.
    MXNet's engine, stopping its threads there, can abort a finished run with signal 6 (seen under mpirun)."""
    try:
        run_main(run, *args)
        code = 0
    except SystemExit as e:
        code = e.code
    finally:
        mx.nd.waitall()  # MXNet's queued work done while Horovod is still up
    if not isinstance(code, int):  # sys.exit(None) or sys.exit("message"), as Python exits
        if code is not None:
            print(code, file=sys.stderr)
        code = 0 if code is None else 1
    atexit._run_exitfuncs()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def shard_rows(n_rows, epoch, seed, rank, size, start=0):
    """This rank's rows for one epoch: a fresh global shuffle per epoch, dealt round-robin.

    Every rank gets the same number of rows (the few left over sit out this epoch), so every
    rank runs the same number of steps: Horovod stalls on uneven shards. start: the shuffled
    rows already trained on in this epoch, skipped. After s steps of B rows on each of `size`
    ranks that is s * B * size rows, and each rank then gets the rows it had left, in order.
    """
    order = np.random.default_rng([seed, epoch]).permutation(n_rows)[start:]
    per_rank = len(order) // size
    return order[rank:per_rank * size:size]


# ---- what every rank decides together ----------------------------------------------------
@contextlib.contextmanager
def errors_reach_every_rank():
    """Every rank enters this block at the same point of the job. A UserError that any rank
    meets inside it is raised on every rank as it leaves: printed by the lowest rank that
    met one, the others quiet. So no rank is left waiting in a collective for a rank that
    has stopped, and the job prints one line, not one per rank."""
    error = None
    try:
        yield
    except UserError as e:
        error = e
    if hvd.size() == 1:  # no other rank to tell
        if error is not None:
            raise error
        return
    messages = hvd.allgather_object(None if error is None else str(error), name="errors")
    found = [rank for rank, message in enumerate(messages) if message is not None]
    if found:
        raise UserError(messages[found[0]], quiet=hvd.rank() != found[0] or error.quiet)


def broadcast_object(obj, name):
    """Rank 0's obj on every rank. Not hvd.broadcast_object: on rank 0 it returns, freeing
    its tensors, before Horovod 0.28's MXNet op has read them, which can crash the process;
    an allgather waits for its result on every rank."""
    if hvd.size() == 1:
        return obj
    return hvd.allgather_object(obj if hvd.rank() == 0 else None, name=name)[0]


def from_local_rank_0(obj, name):
    """The obj of local rank 0 of this rank's host (hosts told apart by name, as Horovod does)."""
    if hvd.size() == 1:
        return obj
    sent = hvd.allgather_object((socket.gethostname(), obj) if hvd.local_rank() == 0 else None, name=name)
    return dict(pair for pair in sent if pair is not None)[socket.gethostname()]


STOP_GRACE_S = float(os.environ.get("DISTJOB_STOP_GRACE_S", 30))  # within Kubernetes' 60 s grace period
CONTROL_EVERY = 16  # steps between exchanges of the flags below: a stop comes within 2x this many
SIGNAL, LOSS_NOT_FINITE, SAVE_WANTED = range(3)  # the flags each rank shares


class StopWatchdog:
    """A SIGTERM or SIGINT that python's handler has not seen within STOP_GRACE_S (the main
    thread stuck in one long operator: handlers run only between bytecodes) ends the process,
    128 + the signal, without a checkpoint: those saved before stay. The C-level handler
    writes the signal's number to a wakeup pipe at once, from any thread; a thread of ours
    waits on it."""

    def __init__(self):
        self.read_end, self.write_end = os.pipe()
        os.set_blocking(self.write_end, False)
        self.previous = signal.set_wakeup_fd(self.write_end, warn_on_full_buffer=False)
        self.answered = threading.Event()  # the handler ran (RankControl.note), or the run is over
        threading.Thread(target=self.watch, name="distjob-stop-watchdog", daemon=True).start()

    def watch(self):
        try:
            signum = self._next_stop_signal()
        finally:
            os.close(self.read_end)
        if signum is None or self.answered.wait(STOP_GRACE_S):
            return
        print(f"distjob: {signal.Signals(signum).name} not answered within {STOP_GRACE_S:g} s (one operator "
              "still running): exiting without a checkpoint; the checkpoints saved before are kept",
              file=sys.stderr, flush=True)
        os._exit(128 + signum)

    def _next_stop_signal(self):
        """-> the first SIGTERM or SIGINT written to the pipe, or None once it is closed."""
        while True:
            got = os.read(self.read_end, 1)
            if not got:
                return None
            if got[0] in (signal.SIGTERM, signal.SIGINT):
                return got[0]

    def close(self):
        self.answered.set()
        signal.set_wakeup_fd(self.previous)
        os.close(self.write_end)  # the watching thread reads end-of-file and returns


class RankControl:
    """Decisions every rank must take at the same step: stop (a SIGTERM or SIGINT reached some
    rank), give up (some rank's loss is not finite), checkpoint now (rank 0's clock).

    A signal only sets a flag; every CONTROL_EVERY steps each rank sends its flags to all
    without waiting (an asynchronous allgather), and reads what every rank sent the time
    before, which has long arrived: no step waits for the exchange.
    """

    def __init__(self, ctx):
        self.ctx, self.signal, self.pending = ctx, 0, None
        self.before = {sig: signal.signal(sig, self.note) for sig in (signal.SIGTERM, signal.SIGINT)}
        self.watchdog = StopWatchdog()

    def note(self, signum, frame):
        self.signal = signum
        self.watchdog.answered.set()  # the loop has it: the stop comes at the next exchange
        # A second signal acts at once: SIGINT raises KeyboardInterrupt, SIGTERM ends the process.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    def close(self):
        for sig, handler in self.before.items():
            signal.signal(sig, handler)
        self.watchdog.close()

    def _flags(self, loss_sum, save_wanted):
        not_finite = loss_sum * 0 != 0  # on the device, no wait: nan * 0 and inf * 0 are nan
        return mx.nd.concat(mx.nd.array([self.signal], ctx=self.ctx), not_finite,
                            mx.nd.array([save_wanted], ctx=self.ctx), dim=0).reshape((1, -1))

    def after_step(self, steps_done, loss_sum, save_wanted, where):
        """At a step boundary -> "stop", "save" or None; raises UserError for a loss that is
        not finite. loss_sum: this rank's (1,) running loss on the device."""
        if steps_done % CONTROL_EVERY:
            return None
        previous = self.pending
        self.pending = self._share(self._flags(loss_sum, save_wanted))
        return None if previous is None else self._decide(previous.asnumpy(), where)

    def at_epoch_end(self, loss_sum, where):
        """The epoch's last exchange, waited for -> "stop" or None (raises as after_step)."""
        if self.pending is not None:
            self._decide(self.pending.asnumpy(), where)
        self.pending = None
        everyone = self._share(self._flags(loss_sum, False)).asnumpy()
        return self._decide(everyone, where)

    @staticmethod
    def _share(flags):
        """Every rank's flags, (world size, 3), without waiting; alone, just this rank's."""
        return flags if hvd.size() == 1 else hvd.allgather(flags, name="control")

    def _decide(self, everyone, where):
        not_finite = np.flatnonzero(everyone[:, LOSS_NOT_FINITE])
        if len(not_finite):
            raise UserError(f"{where}: the training loss is not finite (nan or inf) on rank "
                            f"{not_finite[0]}; the checkpoints saved so far are kept (a lower --lr "
                            "may help)", quiet=hvd.rank() != 0)
        if everyone[:, SIGNAL].any():
            self.signal = int(everyone[:, SIGNAL].max())
            return "stop"
        return "save" if everyone[:, SAVE_WANTED].any() else None
