"""One horovodrun worker of the bench: train.py's trainer and train_step for a fixed number of
steps on its shard of FOLDER's arrays (or the trainer a knob asks for instead); rank 0 prints
the samples/s of the whole world. Started by distjob.bench.horovod:

    horovodrun -np 2 --gloo python -m distjob.bench.worker FOLDER --pooling mean --batch-size 1024
"""
import argparse
import json
import os
import time
from pathlib import Path

import horovod.mxnet as hvd
import mxnet as mx
import numpy as np
from mxnet import gluon

from ..config import Config
from ..distributed import init_horovod, shard_rows
from ..model import POOLINGS, build_model
from ..optimizer import FusedAdam
from ..train import make_trainer, rows_on_device
from .timing import Loop, train_epoch

RESULT_TAG = "BENCH_RESULT "  # the line rank 0 hands its numbers back on
WINDOWS = 3                   # timed windows; the best counts, as other processes add noise


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m distjob.bench.worker", description=__doc__.split("\n\n")[0])
    p.add_argument("folder", help="holds ids.npy, labels.npy and matrix.npy")
    p.add_argument("--pooling", default="mean", choices=POOLINGS)
    p.add_argument("--batch-size", type=int, default=1024, help="per worker")
    p.add_argument("--steps", type=int, default=50, help="steps per timed window")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    p.add_argument("--compression", default="none", choices=("none", "fp16"))
    p.add_argument("--num-groups", type=int, default=1, help="DistributedTrainer's (train.py: 1)")
    p.add_argument("--local-trainer", action="store_true",
                   help="a plain gluon.Trainer: the same work, gradients never exchanged")
    p.add_argument("--adam", default="fused", choices=("fused", "mxnet"),
                   help="train.py's FusedAdam, or MXNet's Adam (a call per tensor)")
    p.add_argument("--gloo-priority", default="idle", choices=("idle", "nice19", "normal"),
                   help="Gloo's threads under SCHED_IDLE (train.py), at nice 19, or as Horovod starts them")
    return p.parse_args(argv)


def bench_trainer(args, model):
    """The trainers the knobs ask for instead of train.py's (None: train.py's own)."""
    adam = mx.optimizer.Adam(learning_rate=1e-3) if args.adam == "mxnet" else FusedAdam(learning_rate=1e-3)
    if args.local_trainer:
        return gluon.Trainer(model.trainable_params(), adam)
    if args.adam == "mxnet" or args.num_groups != 1:
        return hvd.DistributedTrainer(model.trainable_params(), adam, num_groups=args.num_groups,
                                      compression=hvd.Compression.fp16 if args.compression == "fp16"
                                      else hvd.Compression.none)
    return None


def main(argv=None):
    args = parse_args(argv)
    world = init_horovod(gloo_sched_idle=args.gloo_priority == "idle")
    if args.gloo_priority == "nice19":
        for tid in world.gloo_threads:
            os.setpriority(os.PRIO_PROCESS, tid, 19)
    folder = Path(args.folder)
    ids, labels = np.load(folder / "ids.npy"), np.load(folder / "labels.npy")
    B = args.batch_size
    model = build_model(np.load(folder / "matrix.npy"), args.pooling, ids.shape[1], mx.cpu(), B,
                        num_classes=int(labels.max()) + 1)
    hvd.broadcast_parameters(model.trainable_params(), root_rank=0)
    cfg = Config(pooling=args.pooling, batch_size=B, compression=args.compression).validate()
    trainer = bench_trainer(args, model) or make_trainer(cfg, model, len(ids), world.size, B)
    loop = Loop("hybrid" if args.adam == "mxnet" else "train.py")  # both step by train.py's train_step
    rows = shard_rows(len(ids), 1, 42, world.rank, world.size)
    rows = np.resize(rows, max(len(rows), B))  # weak scaling: a full per-worker batch even when tiny
    shard_ids = rows_on_device(ids, rows, mx.cpu(), "int32")
    shard_labels = rows_on_device(labels, rows, mx.cpu(), "float32")

    def batches(first, count):  # train.py's slices, cycling over the shard
        n_batches = len(rows) // B
        for i in range(first, first + count):
            part = slice((i % n_batches) * B, (i % n_batches + 1) * B)
            yield (shard_ids[part],), shard_labels[part]

    def all_ranks_here():  # this rank's work done, then an allreduce every rank must reach
        mx.nd.waitall()
        hvd.allreduce(mx.nd.ones(1)).wait_to_read()
    train_epoch(model, trainer, batches(0, args.warmup), B, loop)
    windows = []
    for window in range(WINDOWS):
        all_ranks_here()
        started = time.perf_counter()
        train_epoch(model, trainer, batches(args.warmup + window * args.steps, args.steps), B, loop)
        all_ranks_here()
        windows.append(time.perf_counter() - started)
    seconds = min(windows)
    if world.rank == 0:
        print(RESULT_TAG + json.dumps({"np": world.size, "samples_per_s": world.size * B * args.steps / seconds,
                                       "seconds": seconds, "steps": args.steps}), flush=True)


if __name__ == "__main__":
    main()
