"""Section 7, peers: distjob's model in PyTorch (torch_peer.py) on the same ids, table, batch and
threads, alone and under DDP with 2 processes; and the cheap baselines on the same texts and
tokens: scikit-learn's TF-IDF + LinearSVC, and fastText with and without GloVe as its initial
embedding. torch and fasttext are optional (the `peers` extra): without one, its rows are
skipped. PyTorch runs in processes of its own: this one has horovod.mxnet loaded, after which
torch's import crashes."""
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from ..data import stratified_holdout
from ..distributed import shard_rows
from ..machine import compute_threads
from ..model import frozen_table
from ..readers import read_labeled_csv
from ..cheap_baselines import TOKENS, fit_and_score, installed
from .baselines import N_CLASSES, epoch_order
from .sections import log

ROOT = Path(__file__).resolve().parents[2]
NO_TORCH = ("PyTorch rows skipped: `import torch` failed (install the peers extra: "
            "pip install -e '.[peers]', or .venv/bin/pip install torch==2.13.0)")


def peer_env(threads, **extra):
    """The environment of a torch_peer process: distjob importable, threads set."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), **extra}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def torch_version():
    """torch's version, or None where `import torch` fails (in a process of its own)."""
    done = subprocess.run([sys.executable, "-c", "import torch; print(torch.__version__)"], capture_output=True,
                          text=True, env=peer_env(1), cwd=ROOT)
    return done.stdout.strip() if done.returncode == 0 else None


def run_torch_peer(folder, commands, env):
    """Start every command (torch_peer processes working together), wait for all of them;
    -> the JSON they left in folder/result.json."""
    processes = []
    for i, command in enumerate(commands):
        with open(folder / f"log_{i}.txt", "w") as out:  # a file: no pipe to fill and block on
            processes.append(subprocess.Popen([sys.executable, "-m", "distjob.bench.torch_peer", *command],
                                              stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env))
    codes = [process.wait(timeout=600) for process in processes]
    result = folder / "result.json"
    if any(codes) or not result.exists():
        logs = "\n".join((folder / f"log_{i}.txt").read_text()[-2000:] for i in range(len(commands)))
        raise RuntimeError(f"python -m distjob.bench.torch_peer {commands[0][0]} failed (exit {codes}):\n{logs}")
    return json.loads(result.read_text())


# ---- PyTorch, one process -----------------------------------------------------------------
def torch_epochs(matrices, ids, labels, threads, args):
    """-> {width: {pooling: samples/s of PyTorch training epochs}}, for each pooling torch_peer
    has (this process must not import it: see above); the epoch's rows and batches
    as baselines.sliced_id_batches's, one warm-up epoch, then epochs until --min-seconds."""
    with tempfile.TemporaryDirectory(prefix="distjob-bench-") as folder:
        folder = Path(folder)
        for name, array in (("ids", ids), ("labels", labels), ("order", epoch_order(len(ids), 1)),
                            *((f"matrix_{dim}", matrix) for dim, (matrix, _) in matrices.items())):
            np.save(folder / f"{name}.npy", array)
        command = ["epochs", str(folder), "--dims", ",".join(map(str, matrices)), "--min-seconds",
                   str(args.min_seconds), "--num-classes", str(N_CLASSES), "--batch-size", str(args.batch_size),
                   "--threads", str(threads)]
        return {int(dim): rates for dim, rates in run_torch_peer(folder, [command], peer_env(threads)).items()}


def add_torch_rows(report, version, matrices, ids, labels, args):
    """PyTorch's epoch per width and pooling at 1 thread and at 2 (where there are 2 cores), its
    best beside distjob's epoch as train.py runs it (and from ids where that differs)."""
    thread_counts = sorted({1, min(2, os.cpu_count() or 1)})
    log(f"PyTorch: its poolings at {', '.join(f'{d}-d' for d in matrices)}, on {thread_counts} threads")
    rates = {threads: torch_epochs(matrices, ids, labels, threads, args) for threads in thread_counts}
    for dim in matrices:
        title = f"7. peers: PyTorch {version} on distjob's model, {dim}-d, samples/s of a training epoch"
        for pooling in rates[1][dim]:
            threads = max(thread_counts, key=lambda n: rates[n][dim][pooling])
            rate = rates[threads][dim][pooling]
            module = {"flatten": "Embedding, flatten", "attention": "Embedding, Linear scorer, softmax",
                      "meanmax": "EmbeddingBag(mean) + EmbeddingBag(max)"}.get(pooling, f"EmbeddingBag({pooling})")
            # Section 1's epoch as train.py runs it: on vectors pooled once where it pools once, else from ids.
            pooled_once, from_ids = (report.value(f"epochs.{dim}d.{kind}.{pooling}")
                                     for kind in ("pooled_once", "distjob"))
            distjob = pooled_once or from_ids
            compared = (f"distjob pooled once; from ids {from_ids / rate:.2f}x" if pooled_once else
                        "distjob from ids" if from_ids else "no distjob row (section 1 not run)")
            note = (f"best of torch.set_num_threads {thread_counts}: {threads} "
                    f"({', '.join(f'{n}: {rates[n][dim][pooling]:,.0f}' for n in thread_counts)}); {compared}")
            report.add(f"peers.{dim}d.torch.{pooling}", title, f"PyTorch: frozen {module}, the same head, Adam",
                       rate, "samples/s", distjob / rate if distjob else None, "distjob / PyTorch", note)
            if distjob:
                report.target("pytorch_flatten" if pooling == "flatten" else "pytorch", f"{dim}-d {pooling}",
                              distjob / rate)


# ---- PyTorch DDP --------------------------------------------------------------------------
def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torch_ddp(n_workers, matrix, pooling, ids, labels, args):
    """-> (samples/s, threads per worker) of n_workers DDP processes over Gloo on 127.0.0.1, each
    with worker.py's shard, steps and windows and horovod.run_horovod's threads (floating)."""
    threads, B = compute_threads((os.cpu_count() or 1) // n_workers), args.batch_size
    env = peer_env(threads, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), GLOO_SOCKET_IFNAME="lo")
    with tempfile.TemporaryDirectory(prefix="distjob-bench-") as folder:
        folder = Path(folder)
        np.save(folder / "table.npy", frozen_table(matrix, pooling))
        for rank in range(n_workers):
            rows = shard_rows(len(ids), 1, 42, rank, n_workers)
            rows = np.resize(rows, max(len(rows), B))  # weak scaling: a full batch even when tiny
            np.save(folder / f"ids_{rank}.npy", ids[rows])
            np.save(folder / f"labels_{rank}.npy", labels[rows])
        commands = [["ddp", str(folder), "--rank", str(rank), "--world-size", str(n_workers), "--pooling", pooling,
                     "--steps", str(args.steps), "--warmup", str(args.warmup), "--num-classes", str(N_CLASSES),
                     "--batch-size", str(B), "--threads", str(threads)] for rank in range(n_workers)]
        return run_torch_peer(folder, commands, env)["samples_per_s"], threads


def add_ddp_row(report, version, matrix, dim, ids, labels, args):
    pooling = "mean"
    log(f"{dim}-d: PyTorch DDP -np 2, {pooling}")
    rate, threads = torch_ddp(2, matrix, pooling, ids, labels, args)
    key = f"horovod.{dim}d.np2.floating" if args.hvd_pooling == pooling else ""
    horovod = report.value(key)
    title = (f"7. peers: PyTorch {version} DDP (Gloo, 127.0.0.1), {dim}-d {pooling}, "
             f"{args.batch_size} per worker per step, samples/s of all workers")
    report.add(f"peers.{dim}d.torch_ddp.np2.{pooling}", title,
               "DDP, 2 processes, workers floating, beside horovodrun -np 2 --gloo", rate, "samples/s",
               horovod / rate if horovod else None, "distjob / PyTorch",
               f"OMP_NUM_THREADS={threads}; distjob: {key}" if horovod else
               f"OMP_NUM_THREADS={threads}; no distjob row (section 6 not run, or not {pooling})")


# ---- the cheap baselines: scikit-learn, fastText ------------------------------------------
def baseline_splits(labels, texts, args):
    """-> (train texts, train labels, test texts, test labels, description): the bench's rows and
    DIR/test.csv where there is one, else the bench's rows with a fifth held out."""
    test_path = os.path.join(args.data_dir, "test.csv") if args.data_dir else None
    if test_path and os.path.exists(test_path):
        test_labels, test_texts = read_labeled_csv(test_path)
        return texts, labels, test_texts, test_labels, f"{len(texts):,} rows -> {test_path}"
    train, test = stratified_holdout(labels, len(labels) // 5, seed=0)
    return ([texts[i] for i in train], labels[train], [texts[i] for i in test], labels[test],
            f"{len(train):,} rows -> {len(test):,} held out of the bench's rows")


def add_baseline_rows(report, glove, labels, texts, args):
    """The cheap baselines (cheap_baselines.BASELINES) on the bench's rows, tested on test.csv: a fit
    time and a test accuracy each, or one header line for each library that is not installed."""
    train_texts, train_labels, test_texts, test_labels, split = baseline_splits(np.asarray(labels), texts, args)
    title = "7. peers: the cheap baselines on the same texts and tokens"

    def skipped(library, line):
        log(line)
        report.header[library] = line
    for key, baseline in installed(skipped).items():
        log(baseline.name)
        seconds, accuracy = fit_and_score(baseline, train_texts, train_labels, test_texts, test_labels, glove[:2])
        report.add(f"peers.{key}.fit_seconds", title, f"{baseline.name}: fit", seconds, "s",
                   note=f"{baseline.settings}; {TOKENS}; {split}")
        report.add(f"peers.{key}.accuracy", title, f"{baseline.name}: test accuracy", accuracy, "fraction",
                   note=split)


def section_peers(report, matrices, ddp_matrix, ids, labels, texts, glove, args):
    """Section 7: PyTorch per width (matrices: {dim: (matrix, source)}) and pooling, DDP on the first
    --hvd-dims width (ddp_matrix), and the cheap baselines (glove: the GloVe table, for fastText's start)."""
    version = torch_version()
    if version is None:
        log(NO_TORCH)
        report.header["peers"] = NO_TORCH
    else:
        add_torch_rows(report, version, matrices, ids, labels, args)
        add_ddp_row(report, version, ddp_matrix, args.hvd_dims[0], ids, labels, args)
    add_baseline_rows(report, glove, labels, texts, args)
