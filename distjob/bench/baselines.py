"""What distjob is measured against: the tutorial pipeline (the GluonNLP tutorial's naive data
path and model that distjob started from), the input pipelines between it and distjob's, and
the numpy/scipy and MXNet CSR versions of embedding + pooling."""
from dataclasses import replace

import mxnet as mx
import numpy as np
import scipy.sparse
from mxnet import gluon, init
from mxnet.gluon import nn

from ..distributed import shard_rows
from ..download import AGNEWS_CLASSES
from ..model import build_model, dense_head, frozen_table, pooled_width, token_mask, weighted_sum
from ..text import tokenize

UNK_ID = 1
N_CLASSES = len(AGNEWS_CLASSES)  # the bench trains on AG News (or data of its 4 topics)


# ---- input pipelines: (inputs, labels) batches of one epoch ------------------------------
def epoch_order(n_rows, epoch):
    """This epoch's row order: train.py's shard for a world of one."""
    return shard_rows(n_rows, epoch, 42, 0, 1)


def batch_rows(n_rows, batch_size, epoch):
    """This epoch's full batches of row numbers."""
    order = epoch_order(n_rows, epoch)
    return [order[start:start + batch_size] for start in range(0, len(order) - batch_size + 1, batch_size)]


def tutorial_batches(texts, labels, token_to_idx, batch_size, max_tokens, epoch):
    """The tutorial pipeline: every epoch, every text is tokenized with the regex, its ids looked
    up one by one in a python dict, padded in python, and each batch becomes a new NDArray."""
    for rows in batch_rows(len(texts), batch_size, epoch):
        batch = []
        for i in rows:
            ids = [token_to_idx.get(token, UNK_ID) for token in tokenize(texts[i])[:max_tokens]]
            batch.append(ids + [0] * (max_tokens - len(ids)))
        yield (mx.nd.array(batch),), mx.nd.array(labels[rows])


def numpy_id_batches(ids, labels, batch_size, epoch):
    """ids computed once, but still a python batchify: fancy-index + a new NDArray per batch."""
    for rows in batch_rows(len(ids), batch_size, epoch):
        yield (mx.nd.array(ids[rows], dtype="int32"),), mx.nd.array(labels[rows])


def slices(inputs, labels, batch_size):
    """Batches as slices of one epoch's arrays, made once (no per-batch copy)."""
    for step in range(len(labels) // batch_size):
        part = slice(step * batch_size, (step + 1) * batch_size)
        yield tuple(x[part] for x in inputs), labels[part]


def sliced_id_batches(ids, labels, batch_size, epoch):
    """train.py's: one int32 NDArray per epoch's shard, sliced per batch."""
    order = epoch_order(len(ids), epoch)
    return slices([mx.nd.array(ids[order], dtype="int32")], mx.nd.array(labels[order], dtype="float32"), batch_size)


def token_counts(ids):
    """(values, column indices, row pointers) of the (rows, V) CSR of token counts: one entry
    per id, padding id 0 included, harmlessly, since the frozen table's row 0 is 0."""
    return (np.ones(ids.size, np.float32), ids.ravel().astype(np.int64),
            np.arange(0, ids.size + 1, ids.shape[1], dtype=np.int64))


def sliced_csr_batches(ids, labels, batch_size, epoch):
    """The CSR lever's: per shard, each batch's (batch, V) CSR of token counts and 1 / token
    count, all made before the first batch. One CSR per batch, not one sliced: MXNet refuses an
    operator input of 2^31 or more elements, sparse or not, as a (rows, V) CSR is at 120k rows."""
    order = epoch_order(len(ids), epoch)
    shard, width = ids[order], int(ids.max()) + 1 if ids.size else 1
    inv_n = mx.nd.array(1.0 / np.maximum((shard != 0).sum(1, keepdims=True), 1))
    shard_labels = mx.nd.array(labels[order], dtype="float32")
    batches = []
    for step in range(len(order) // batch_size):
        part = slice(step * batch_size, (step + 1) * batch_size)
        counts = mx.nd.sparse.csr_matrix(token_counts(shard[part]), shape=(batch_size, width))
        batches.append(((counts, inv_n[part]), shard_labels[part]))
    return iter(batches)


# ---- models other than distjob's ---------------------------------------------------------
class TutorialClassifier(gluon.HybridBlock):
    """The tutorial's model: Embedding -> mean/sum over axis 1 (padding included) or flatten ->
    distjob's dense layers."""

    def __init__(self, vocab_size, dim, pooling, max_tokens, **kwargs):
        super().__init__(**kwargs)
        self.pooling = pooling
        with self.name_scope():
            self.embedding = nn.Embedding(vocab_size, dim)
            self.classifier = dense_head(pooled_width(pooling, dim, max_tokens), N_CLASSES)

    def hybrid_forward(self, F, ids):
        vectors = self.embedding(ids)
        if self.pooling == "mean":
            pooled = vectors.mean(axis=1)
        elif self.pooling == "sum":
            pooled = vectors.sum(axis=1)
        else:
            pooled = vectors.flatten()
        return self.classifier(pooled)


def tutorial_model(matrix, pooling, max_tokens, hybridize=None, embedding_grad="null"):
    """The tutorial's model on the frozen table; embedding_grad="write" makes the embedding
    trainable, only to show what its gradient would cost."""
    model = TutorialClassifier(matrix.shape[0], matrix.shape[1], pooling, max_tokens)
    model.embedding.weight.grad_req = embedding_grad
    model.initialize(init.Xavier())
    model.embedding.weight.set_data(frozen_table(matrix, pooling))
    if hybridize is not None:
        model.hybridize(**hybridize)
    return model


def batch_dot_mean(F, vectors, ids, max_tokens, scores):
    """Mean pooling as one masked batched product mask/n (B,1,T) x vectors (B,T,D)."""
    mask, n_tokens = token_mask(F, ids)
    return weighted_sum(F, vectors, F.broadcast_div(mask, F.maximum(n_tokens, 1)))


def batch_dot_mean_model(matrix, max_tokens):
    """distjob's model, one row block, its mean pooled by batch_dot_mean instead."""
    model = build_model(matrix, "mean", max_tokens, mx.cpu(), row_blocks=1, num_classes=N_CLASSES)
    model.pooler = replace(model.pooler, pool=batch_dot_mean)  # before the first call builds the graph
    return model


class CsrMeanClassifier(gluon.HybridBlock):
    """Mean pooling without the (B, T, D) tensor: CSR(token counts) · W * (1 / n_tokens)."""

    def __init__(self, shape, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.weight = self.params.get("embedding_weight", shape=shape, grad_req="null")
            self.classifier = dense_head(shape[1], N_CLASSES)

    def hybrid_forward(self, F, counts, inv_n, weight):
        return self.classifier(F.broadcast_mul(F.sparse.dot(counts, weight), inv_n))


def csr_model(matrix):
    model = CsrMeanClassifier(matrix.shape)
    model.initialize(init.Xavier())
    model.weight.set_data(frozen_table(matrix, "mean"))
    model.hybridize(static_alloc=True, static_shape=True)
    return model


# ---- embedding + pooling outside a model -------------------------------------------------
def mxnet_csr_pooling(matrix, pooling, batches):
    """-> (fn, inputs): MXNet's sparse.dot(CSR(counts), W) [* 1/n] for mean or sum, its CSRs
    built beforehand (as a shard's would be, once per epoch)."""
    weight = mx.nd.array(frozen_table(matrix, pooling))
    inputs = []
    for ids in batches:
        counts = mx.nd.sparse.csr_matrix(token_counts(ids), shape=(len(ids), len(matrix)))
        n_tokens = np.maximum((ids != 0).sum(1, keepdims=True), 1)
        inputs.append((counts, mx.nd.array(1.0 / n_tokens if pooling == "mean" else np.ones_like(n_tokens))))
    return lambda item: mx.nd.broadcast_mul(mx.nd.sparse.dot(item[0], weight), item[1]), inputs


def numpy_floors(matrix, pooling):
    """{name: fn(ids) -> pooled}: plain numpy/scipy gather + pool, the same results as distjob's.
    The gather writes into a reused buffer with mode="clip": with mode="raise" numpy copies `out`."""
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


# ---- the embedding matrix ----------------------------------------------------------------
def tutorial_embedding_matrix(idx_to_token, glove_token_list, glove_vectors):
    """The tutorial's: a python dict over the GloVe words, then a lookup and a row copy per token.
    -> (matrix, number of tokens found, padding not counted), as embeddings.embedding_matrix."""
    index = {token: i for i, token in enumerate(glove_token_list)}
    matrix = np.zeros((len(idx_to_token), glove_vectors.shape[1]), np.float32)
    found = 0
    for row, token in enumerate(idx_to_token):
        j = index.get(token)
        if j is not None:
            matrix[row] = glove_vectors[j]
            found += row > 0
    return matrix, found


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
