"""Section 6: weak scaling under real `horovodrun -np 1` and `-np 2 --gloo` of the bench's
worker, on the whole machine and a core per worker, and the knobs one at a time against
train.py's settings. Why those settings won: docs/performance.md."""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from ..launch import horovodrun_path
from ..machine import compute_threads
from .sections import log
from .worker import RESULT_TAG

ROOT = Path(__file__).resolve().parents[2]

KNOBS = [  # (key, row, extra environment, worker flags): each at -np 2 against train.py's settings
    ("gloo_normal", "Gloo's threads left at normal priority (train.py: SCHED_IDLE)", {},
     ("--gloo-priority", "normal")),
    ("cycle_1ms", "HOROVOD_CYCLE_TIME=1 ms, Horovod's default (train.py: 0.1 with peers)",
     {"HOROVOD_CYCLE_TIME": "1"}, ()),
    ("no_fusion", "HOROVOD_FUSION_THRESHOLD=0: no fusion (default 128 MB)", {"HOROVOD_FUSION_THRESHOLD": "0"}, ()),
    ("fp16", "fp16 compression (train.py --compression fp16)", {}, ("--compression", "fp16")),
    ("num_groups_0", "DistributedTrainer(num_groups=0): one allreduce per tensor (train.py uses 1)", {},
     ("--num-groups", "0")),
    ("no_allreduce", "plain gluon.Trainer, no allreduce: the bound without communication", {},
     ("--local-trainer",)),
]
PINNED_KNOBS = [  # (key, row, worker flags): each at -np 2, a core per worker
    ("no_allreduce", "plain gluon.Trainer, no allreduce", ("--local-trainer",)),
    ("gloo_nice19", "Gloo's threads at nice 19", ("--gloo-priority", "nice19")),
    ("gloo_normal", "Gloo's threads left at normal priority", ("--gloo-priority", "normal")),
]


def run_horovod(n_workers, folder, args, extra_env=None, worker_flags=(), one_core_each=False,
                batch_size=None, steps=None):
    """-> (samples/s, threads per worker) of `horovodrun -np N --gloo` of the worker, at
    batch_size (default --batch-size) per worker. Each worker's threads get its share of the
    cores; one_core_each: every worker is also pinned (taskset) to a core of its own."""
    threads = 1 if one_core_each else compute_threads((os.cpu_count() or 1) // n_workers)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MXNET_CPU_WORKER_NTHREADS": "1",
           "HOROVOD_GLOO_TIMEOUT_SECONDS": "120", **(extra_env or {})}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    worker = [sys.executable, "-m", "distjob.bench.worker", str(folder), "--pooling", args.hvd_pooling,
              "--batch-size", str(batch_size or args.batch_size), "--steps", str(steps or args.steps),
              "--warmup", str(args.warmup), *worker_flags]
    if one_core_each:  # horovodrun sets HOROVOD_LOCAL_RANK for each worker it starts
        worker = ["sh", "-c", f'exec taskset -c "$((HOROVOD_LOCAL_RANK % {os.cpu_count()}))" "$@"', "sh",
                  *worker]
    command = [horovodrun_path(), "-np", str(n_workers), "--gloo", *worker]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    found = re.search(re.escape(RESULT_TAG) + r"(\{.*\})", done.stdout)
    if done.returncode != 0 or not found:
        raise RuntimeError(f"horovodrun -np {n_workers} failed (exit {done.returncode}):\n"
                           f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return json.loads(found.group(1))["samples_per_s"], threads


def horovod_scaling(folder, args, with_knobs):
    """-> (rows of (key, name, samples/s, threads, ratio, ratio_of), {setting: -np 2 / -np 1})."""
    cores = os.cpu_count() or 1
    one, threads_one = run_horovod(1, folder, args)
    two, threads_two = run_horovod(2, folder, args)
    log(f"  -np 1: {one:,.0f}, -np 2: {two:,.0f} samples/s")
    rows = [("np1", "-np 1, whole machine", one, threads_one, None, ""),
            ("np2.floating", "-np 2 --gloo, whole machine, workers floating", two, threads_two, two / one, "-np 1")]
    scaling = {"whole machine, workers floating": two / one}
    if with_knobs:  # every core computing leaves none for the worker's python thread
        rate, _ = run_horovod(1, folder, args, {"OMP_NUM_THREADS": str(cores)})
        rows.append(("np1.every_core", f"-np 1, OMP_NUM_THREADS={cores}: every core computing", rate, cores,
                     rate / one, "-np 1"))
    if shutil.which("taskset") and cores >= 2:
        pinned_rows, pinned_scaling = scaling_per_core(folder, args, one, with_knobs)
        rows += pinned_rows
        scaling.update(pinned_scaling)
    for key, name, env, flags in KNOBS if with_knobs else ():
        rate, threads = run_horovod(2, folder, args, env, flags)
        log(f"  -np 2, {name}: {rate:,.0f} samples/s")
        rows.append((f"np2.{key}", f"-np 2, {name}", rate, threads, rate / two, "-np 2"))
    return rows, scaling


def scaling_per_core(folder, args, one, with_knobs):
    """horovod_scaling's rows with every worker pinned to a core of its own: launch/run.sh's
    binding against `one` (-np 1 on the whole machine), and -np 2 against -np 1 on one core."""
    one_pinned, _ = run_horovod(1, folder, args, one_core_each=True)
    two_pinned, _ = run_horovod(2, folder, args, one_core_each=True)
    log(f"  one core per worker: -np 1: {one_pinned:,.0f}, -np 2: {two_pinned:,.0f} samples/s")
    rows = [("np2.bound", "-np 2 --gloo, each worker pinned to a core of its own (launch/run.sh)", two_pinned, 1,
             two_pinned / one, "-np 1"),
            ("np1.pinned", "-np 1, pinned to one core", one_pinned, 1, None, ""),
            ("np2.pinned", "-np 2 --gloo, a core each, against -np 1 on one core", two_pinned, 1,
             two_pinned / one_pinned, "-np 1 pinned")]
    scaling = {"whole machine, as launch/run.sh binds the workers": two_pinned / one,
               "one core per worker": two_pinned / one_pinned}
    if not with_knobs:
        return rows, scaling
    for key, name, flags in PINNED_KNOBS:
        rate, _ = run_horovod(2, folder, args, worker_flags=flags, one_core_each=True)
        rows.append((f"np2.pinned.{key}", f"-np 2 pinned, {name}", rate, 1, rate / one_pinned, "-np 1 pinned"))
    for batch in args.hvd_batch_sizes:  # more compute per step, the same exchange
        steps = max(args.steps, args.steps * args.batch_size // batch)  # windows of >= --steps x --batch-size
        one_b, _ = run_horovod(1, folder, args, one_core_each=True, batch_size=batch, steps=steps)
        two_b, _ = run_horovod(2, folder, args, one_core_each=True, batch_size=batch, steps=steps)
        log(f"  one core per worker, {batch} per worker: -np 1: {one_b:,.0f}, -np 2: {two_b:,.0f}")
        rows += [(f"np1.pinned.b{batch}", f"-np 1 pinned, {batch} per step", one_b, 1, None, ""),
                 (f"np2.pinned.b{batch}", f"-np 2 pinned, {batch} per worker per step", two_b, 1, two_b / one_b,
                  f"-np 1 pinned, {batch}")]
        scaling[f"one core per worker, {batch} per worker"] = two_b / one_b
        if batch == min(args.hvd_batch_sizes):  # where the python thread is the limit
            rate, _ = run_horovod(1, folder, args, worker_flags=("--adam", "mxnet"), one_core_each=True,
                                  batch_size=batch, steps=steps)
            rows.append((f"np1.pinned.b{batch}.mxnet_adam", f"-np 1 pinned, {batch} per step, MXNet's Adam: a "
                         "call per tensor (train.py: FusedAdam)", rate, 1, rate / one_b, f"-np 1 pinned, {batch}"))
    return rows, scaling


def section_horovod(report, matrices, ids, labels, args):
    """Section 6 per --hvd-dims width (matrices: {dim: matrix}); the knobs on the first."""
    if horovodrun_path() is None:
        raise RuntimeError("horovodrun not found beside python or on PATH")
    for i, dim in enumerate(args.hvd_dims):
        log(f"horovod: {dim}-d {args.hvd_pooling}")
        with tempfile.TemporaryDirectory(prefix="distjob-bench-") as folder:
            for name, array in (("ids", ids), ("labels", labels), ("matrix", matrices[dim])):
                np.save(os.path.join(folder, f"{name}.npy"), array)
            rows, scaling = horovod_scaling(folder, args, with_knobs=i == 0)
        title = (f"6. horovodrun weak scaling, {dim}-d {args.hvd_pooling}, {args.batch_size} per worker "
                 f"per step, samples/s of all workers")
        for key, name, rate, threads, ratio, ratio_of in rows:
            report.add(f"horovod.{dim}d.{key}", title, name, rate, "samples/s", ratio, ratio_of,
                       f"OMP_NUM_THREADS={threads}, MXNET_CPU_WORKER_NTHREADS=1")
        for setting, ratio in scaling.items():
            report.target("scaling", f"{dim}-d {args.hvd_pooling}, {setting}", ratio)
