"""Sections 1-5, in-process: each measures and adds its rows to the report. Their numbers and
what they mean: docs/performance.md."""
import sys
import warnings

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon

from ..embeddings import embedding_matrix
from ..model import POOLINGS, build_model, pooled_classifier, pooled_width
from ..pooled import pooled_chunks
from ..train import batches_on_device, rows_on_device
from .baselines import (N_CLASSES, batch_dot_mean_model, benchmark_vocabulary, csr_model, epoch_order,
                        mxnet_csr_pooling, numpy_floors, numpy_id_batches, sliced_csr_batches, sliced_id_batches,
                        tutorial_batches, tutorial_embedding_matrix, tutorial_model)
from .timing import best_seconds, forward_backward_ms, samples_per_second, time_per_call

TUTORIAL_POOLINGS = ("mean", "sum", "flatten")          # what the tutorial's model offers
DISTJOB_POOLINGS = ("mean", "sum", "max", "flatten", "attention", "meanmax")
POOLED_ONCE = tuple(name for name in DISTJOB_POOLINGS if POOLINGS[name].pooled_once)  # train.py's default path
FLOOR_POOLINGS = ("mean", "sum", "max", "flatten")  # those with a plain numpy equivalent


def log(message):
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# ---- 1 and 2: epoch throughput -----------------------------------------------------------
def lever_ladder(matrix, ids, labels, texts, vocab, args):
    """Mean pooling, from the tutorial pipeline to distjob's one lever at a time (cumulative);
    then one lever distjob does not use: CSR(counts)·W. -> [(key, label, samples/s)]."""
    B, T = args.batch_size, args.max_tokens
    tokenized = lambda e: tutorial_batches(texts, labels, vocab.token_to_idx, B, T, e)  # noqa: E731
    from_numpy = lambda e: numpy_id_batches(ids, labels, B, e)  # noqa: E731
    sliced = lambda e: sliced_id_batches(ids, labels, B, e)  # noqa: E731
    tutorial = lambda hybridize=None: tutorial_model(matrix, "mean", T, hybridize)  # noqa: E731
    distjob = lambda: build_model(matrix, "mean", T, mx.cpu(), B, num_classes=N_CLASSES)  # noqa: E731
    rungs = [
        ("tutorial", "the tutorial pipeline: tokenize+lookup+pad per batch, mean(axis=1), imperative, "
         "loss read per batch", tutorial, tokenized, "tutorial"),
        ("ids_once", "+ ids once (python batchify: ids[rows] -> new NDArray per batch)",
         tutorial, from_numpy, "tutorial"),
        ("shard_sliced", "+ one int32 NDArray per shard, sliced per batch", tutorial, sliced, "tutorial"),
        ("device_totals", "+ no host sync per batch (running sums on device)", tutorial, sliced, "device"),
        ("hybridized", "+ hybridize()", lambda: tutorial({}), sliced, "device"),
        ("static_graph", "+ hybridize(static_alloc, static_shape)",
         lambda: tutorial(dict(static_alloc=True, static_shape=True)), sliced, "device"),
        ("batch_dot_mean", "+ masked mean as one batch_dot", lambda: batch_dot_mean_model(matrix, T),
         sliced, "device"),
        ("conv_token_sum", "+ token sum as a 1x1 convolution, / n",
         lambda: build_model(matrix, "mean", T, mx.cpu(), B, row_blocks=1, num_classes=N_CLASSES), sliced, "device"),
        ("row_blocks", f"+ embedded and pooled in cache-sized row blocks (build_model, {B} rows)",
         distjob, sliced, "device"),
        ("hybridized_totals", "+ loss and running totals hybridized", distjob, sliced, "hybrid"),
        ("fused_adam", "+ Adam's update as one call for all tensors = distjob (train.py's loop)",
         distjob, sliced, "train.py"),
        ("csr_counts", "lever, not in distjob: CSR(counts)·W via sparse.dot (model input change)",
         lambda: csr_model(matrix), lambda e: sliced_csr_batches(ids, labels, B, e), "lever"),
    ]
    results = []
    for key, label, make_model, make_batches, loop_kind in rungs:
        rate = samples_per_second(make_model(), make_batches, B, loop_kind, args.min_seconds, len(ids))
        results.append((key, label, rate))
        log(f"  {label[:60]}: {rate:,.0f} samples/s")
    return results


class DenseOnly(gluon.HybridBlock):
    """A model's dense layers on a fixed pooled input: the backward that must remain."""

    def __init__(self, classifier, pooled, **kwargs):
        super().__init__(**kwargs)
        self.classifier, self.pooled = classifier, pooled

    def trainable_params(self):  # what train.py's trainer is given
        return self.classifier.collect_params()

    def hybrid_forward(self, F, ids):
        return self.classifier(self.pooled)


def dense_layers_alone(embed_dim, pooling, batch_size, max_tokens, min_seconds):
    """samples/s of training only the dense layers on one pooled batch: the ceiling of any
    pipeline for this model, whatever the embedding and pooling cost, and the step train.py
    runs where the vectors are pooled once (model.PooledClassifier)."""
    model = build_model(np.zeros((2, embed_dim), np.float32), pooling, max_tokens, mx.cpu(), batch_size,
                        num_classes=N_CLASSES)  # its embedding is never read
    pooled = mx.nd.random.normal(shape=(batch_size, pooled_width(pooling, embed_dim, max_tokens)))
    labels = mx.nd.array(np.arange(batch_size) % 4)
    return samples_per_second(pooled_classifier(model), lambda epoch: [((pooled,), labels)] * 10, batch_size,
                              "train.py", min_seconds, 10 * batch_size)


def pooled_once_epochs(matrix, pooling, ids, labels, args):
    """-> (samples/s of training epochs as train.py runs them on vectors pooled once, seconds the
    pooling took). The pooling is pooled.build's, over every row, kept in memory; each
    epoch gathers its rows' vectors with train.py's batches_on_device and steps with train_step."""
    B, ctx = args.batch_size, mx.cpu()
    model = build_model(matrix, pooling, args.max_tokens, ctx, B, num_classes=N_CLASSES)
    seconds, vectors = best_seconds(lambda: np.concatenate(list(pooled_chunks(model, ids))), repeats=1)

    def make_batches(epoch):  # run_epoch's inputs: this epoch's rows, full batches
        order = epoch_order(len(ids), epoch)[:len(ids) // B * B]
        batch_labels = rows_on_device(labels, order, ctx, "float32")
        return (((batch,), batch_labels[at:at + B])
                for at, batch in zip(range(0, len(order), B), batches_on_device(vectors, order, B, ctx)))
    rate = samples_per_second(pooled_classifier(model), make_batches, B, "train.py", args.min_seconds,
                              len(ids) // B * B)
    return rate, seconds


def section_epochs(report, dim, matrix, ids, labels, texts, vocab, args):
    """Sections 1 and 2 for one width: the tutorial pipeline vs distjob's per pooling, and the
    lever ladder."""
    B, T, d = args.batch_size, args.max_tokens, f"{dim}d"
    log(f"{dim}-d: lever ladder (mean pooling)")
    ladder = lever_ladder(matrix, ids, labels, texts, vocab, args)
    rates = {key: rate for key, _, rate in ladder}
    tutorial, distjob = {"mean": rates["tutorial"]}, {"mean": rates["fused_adam"]}
    for pooling in TUTORIAL_POOLINGS[1:]:
        log(f"{dim}-d: tutorial pipeline, {pooling}")
        tutorial[pooling] = samples_per_second(
            tutorial_model(matrix, pooling, T),
            lambda e: tutorial_batches(texts, labels, vocab.token_to_idx, B, T, e), B, "tutorial", args.min_seconds,
            len(texts))
    for pooling in DISTJOB_POOLINGS[1:]:
        log(f"{dim}-d: distjob {pooling}")
        distjob[pooling] = samples_per_second(build_model(matrix, pooling, T, mx.cpu(), B, num_classes=N_CLASSES),
                                              lambda e: sliced_id_batches(ids, labels, B, e), B, "train.py",
                                              args.min_seconds, len(ids))
    title = f"1. epoch throughput, {dim}-d"
    for pooling in DISTJOB_POOLINGS:
        if pooling not in tutorial:
            report.add(f"epochs.{d}.distjob.{pooling}", title, f"distjob's pipeline, {pooling}",
                       distjob[pooling], "samples/s", note="(no tutorial equivalent)")
            continue
        report.add(f"epochs.{d}.tutorial.{pooling}", title, f"the tutorial pipeline, {pooling}",
                   tutorial[pooling], "samples/s")
        ratio = distjob[pooling] / tutorial[pooling]
        report.add(f"epochs.{d}.distjob.{pooling}", title, f"distjob's pipeline, {pooling}", distjob[pooling],
                   "samples/s", ratio, "tutorial")
        log(f"{dim}-d: dense layers alone, {pooling}")
        ceiling = dense_layers_alone(dim, pooling, B, T, args.min_seconds)
        report.add(f"epochs.{d}.ceiling.{pooling}", title,
                   f"ceiling: its dense layers alone on pooled vectors, {pooling}", ceiling, "samples/s",
                   ceiling / tutorial[pooling], "tutorial", "no pipeline with this model can beat it")
        report.target("epoch", f"{dim}-d {pooling}", ratio)
    for pooling in POOLED_ONCE:
        log(f"{dim}-d: distjob {pooling}, on vectors pooled once")
        rate, seconds = pooled_once_epochs(matrix, pooling, ids, labels, args)
        report.add(f"epochs.{d}.pooled_once.{pooling}", title, f"distjob's pipeline, {pooling}, on vectors pooled once "
                   "(train.py's default)", rate, "samples/s", rate / distjob[pooling], "from ids",
                   f"pooling all {len(ids):,} rows once took {seconds:.2f} s")
    title = f"2. levers, {dim}-d mean pooling (cumulative, from the tutorial pipeline to distjob)"
    for key, label, rate in ladder:
        report.add(f"levers.{d}.{key}", title, label, rate, "samples/s", rate / rates["tutorial"], "tutorial")


# ---- 3: embedding + pooling vs the numpy floor -------------------------------------------
class EmbedPool(gluon.HybridBlock):
    """A build_model model's frozen embedding + pooling alone (in its row blocks), its dense
    layers left out: in a training step its whole cost is the recorded forward (BlockGrad).
    inside_graph: return one column only, as in training the pooled block stays in the graph's
    static buffers; returned whole, it would be a fresh allocation every call."""

    def __init__(self, model, inside_graph, **kwargs):
        super().__init__(**kwargs)
        self.model, self.inside_graph = model, inside_graph

    def hybrid_forward(self, F, ids):
        pooled = self.model.pooled(F, ids)
        return F.slice_axis(pooled, axis=1, begin=0, end=1) if self.inside_graph else pooled


def embed_pool_ms(matrix, pooling, batches, min_seconds):
    """-> (ms per batch in a recorded forward, as in training; pooled output of the first batch)."""
    timed, checked = [EmbedPool(build_model(matrix, pooling, batches[0].shape[1], mx.cpu(), len(batches[0]),
                                         num_classes=N_CLASSES),
                                inside_graph) for inside_graph in (True, False)]
    for block in (timed, checked):
        block.hybridize(static_alloc=True, static_shape=True)
    nd_batches = [mx.nd.array(b, dtype="int32") for b in batches]

    def forward(ids):
        with autograd.record():
            timed(ids)
    with warnings.catch_warnings():  # "Parameter ... is not used": the dense layers, left out
        warnings.simplefilter("ignore", UserWarning)
        return time_per_call(forward, nd_batches, min_seconds), checked(nd_batches[0]).asnumpy()


def floor_ms(matrix, pooling, batches, min_seconds):
    """-> (fastest floor's name, its ms per batch, its output for the first batch, {name: ms})."""
    timed = []
    for name, fn in numpy_floors(matrix, pooling).items():
        timed.append((time_per_call(fn, batches, min_seconds), name, fn(batches[0])))
    ms, name, first = min(timed, key=lambda t: t[0])
    return name, ms, first, {n: m for m, n, _ in timed}


def section_floor(report, dim, matrix, ids, args):
    """Section 3: embedding+pool forward (MXNet, as in training) vs the numpy/scipy floor."""
    title = f"3. embedding+pooling vs the numpy floor, {dim}-d, ms per batch of {args.batch_size}"
    n = max(1, min(len(ids) // args.batch_size, 4))
    batches = [ids[i * args.batch_size:(i + 1) * args.batch_size] for i in range(n)]
    seconds = args.min_seconds / 4
    for pooling in FLOOR_POOLINGS:
        log(f"{dim}-d: floor {pooling}")
        key = f"floor.{dim}d.{pooling}"
        name, floor, expected, all_floors = floor_ms(matrix, pooling, batches, seconds)
        ms, got = embed_pool_ms(matrix, pooling, batches, seconds)
        others = ", ".join(f"{k} {v:.2f}" for k, v in all_floors.items() if k != name)
        report.add(key, title, f"numpy/scipy floor, {pooling}: {name}", floor, "ms", note=others)
        report.add(f"{key}.distjob", title, f"distjob embedding+pool(), {pooling} (backward: none, see 4.)",
                   ms, "ms", ms / floor, "floor", f"max |distjob - numpy| {np.abs(got - expected).max():.1e}")
        report.target("floor", f"{dim}-d {pooling}", ms / floor)
        if pooling in ("mean", "sum"):
            pooled, inputs = mxnet_csr_pooling(matrix, pooling, batches)
            csr, got = time_per_call(pooled, inputs, seconds), pooled(inputs[0]).asnumpy()
            report.add(f"{key}.mxnet_csr", title,
                       f"lever, not in distjob: MXNet sparse.dot(CSR(counts), W), {pooling}", csr, "ms",
                       csr / floor, "floor", f"max |csr - numpy| {np.abs(got - expected).max():.1e}")


# ---- 4: the frozen embedding's backward --------------------------------------------------
def section_backward(report, dim, matrix, ids, labels, args):
    """Section 4: forward and backward with the embedding frozen, as trained, against the dense
    layers' backward alone; close to it means no (B, T, D) gradient. distjob's graph cannot
    make the embedding trainable (BlockGrad): only the tutorial's model shows that cost."""
    title = f"4. backward with the embedding frozen (as trained) vs trainable, {dim}-d, ms per batch"
    T, batch = args.max_tokens, slice(0, args.batch_size)
    x, y = mx.nd.array(ids[batch], dtype="int32"), mx.nd.array(labels[batch])
    for name, label in (("tutorial", "the tutorial pipeline, mean(axis=1), imperative"),
                        ("mean", "distjob, mean, static graph"), ("attention", "distjob, attention, static graph")):
        model = tutorial_model(matrix, "mean", T) if name == "tutorial" else \
            build_model(matrix, name, T, mx.cpu(), len(x), num_classes=N_CLASSES)
        key = f"backward.{dim}d.{name}"
        forward, frozen = forward_backward_ms(model, x, y)
        pooled = mx.nd.random.normal(shape=(len(x), model.classifier[0].weight.shape[1]))
        _, dense = forward_backward_ms(DenseOnly(model.classifier, pooled), x, y)
        report.add(f"{key}.forward", title, f"{label}: forward", forward, "ms")
        report.add(f"{key}.frozen", title, f"{label}: backward, frozen", frozen, "ms", frozen / dense,
                   "dense alone", f"dense layers alone {dense:.2f} ms: pooling+embedding add {frozen - dense:.2f} ms")
        if name == "tutorial":
            _, trainable = forward_backward_ms(tutorial_model(matrix, "mean", T, embedding_grad="write"), x, y)
            report.add(f"{key}.trainable", title, f"{label}: backward if the embedding were trainable",
                       trainable, "ms", trainable / frozen, "frozen")


# ---- 5: the embedding matrix -------------------------------------------------------------
def section_embedding_build(report, vocab, glove, args):
    """Section 5: the embedding matrix for a full-size vocabulary, distjob's vs the tutorial's."""
    log(f"embedding matrix for a {args.vocab_size:,}-word vocabulary")
    tokens, vectors, source = glove
    token_list = tokens.to_pylist()
    vocabulary = benchmark_vocabulary(args.vocab_size, vocab.idx_to_token, token_list)
    fast_s, (fast, found) = best_seconds(lambda: embedding_matrix(vocabulary, tokens, vectors))
    slow_s, (slow, slow_found) = best_seconds(lambda: tutorial_embedding_matrix(vocabulary, token_list, vectors))
    assert found == slow_found and np.array_equal(fast, slow), "the two builds disagree"
    size = len(vocabulary)
    title = f"5. embedding matrix for a {size:,}-word vocabulary from {source}, seconds (best of 3)"
    report.add("embedding_build.tutorial", title, "the tutorial pipeline: python dict + per-token lookup + "
               "row assignment", slow_s, "s", note="(dict over the GloVe words included; its python list is not)")
    report.add("embedding_build.distjob", title,
               "distjob.embeddings.embedding_matrix: pyarrow index_in + one gather", fast_s, "s",
               slow_s / fast_s, "faster", f"{found:,} of {size - 1:,} words in GloVe")
    report.target("embedding", f"{size:,} words", fast_s)
