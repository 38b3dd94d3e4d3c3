"""ids -> frozen GloVe embedding -> pooled vector -> Dense W relu -> Dense W/2 relu -> Dense K
(W: the head's width, 128 by default; K: the number of classes)."""
from dataclasses import dataclass
from typing import Callable

import numpy as np
from mxnet import gluon, init
from mxnet.gluon import nn

PAD_MAX_VALUE = -1e4  # the padding row's value under max pooling: below any GloVe component
BLOCK_BYTES = 4 << 20  # one row block's (rows, T, D) float32 vectors on CPU: cached, with room
                       # left for the GloVe rows they come from (docs/performance.md)
PREDICT_BATCH_SIZE = 1024  # evaluate, predict and explain score texts in batches of this many


def token_mask(F, ids):
    """(B, T) ids -> (mask (B, T): 1 for a token, 0 for padding; n_tokens (B, 1))."""
    mask = (ids != 0).astype("float32")
    return mask, mask.sum(axis=1, keepdims=True)


def weighted_sum(F, vectors, weights):
    """(B, T, D) with per-text token weights (B, T) -> (B, D): one batched product."""
    return F.batch_dot(weights.expand_dims(1), vectors).reshape((0, -1))


def sum_over_tokens(F, vectors, max_tokens):
    """(B, T, D) -> (B, D), every token weighted 1: a 1x1 convolution that reads the T tokens
    as input channels through one all-ones filter, a single oneDNN/cuDNN pass (faster than
    .sum(axis=1) or a batched product: docs/performance.md)."""
    ones = F.ones((1, max_tokens, 1))
    return F.Convolution(vectors, ones, kernel=(1,), num_filter=1, no_bias=True).reshape((0, -1))


def max_over_tokens(F, vectors, length, n_tokens):
    """Max over axis 1 by halving (faster than .max(axis=1): docs/performance.md). The padding
    row holds PAD_MAX_VALUE, so it never wins and no (B, T, D) mask is needed; a text with no
    tokens pools to 0."""
    while length > 1:
        half = (length + 1) // 2  # odd length: the halves share the middle row, harmless for max
        vectors = F.maximum(F.slice_axis(vectors, axis=1, begin=0, end=half),
                            F.slice_axis(vectors, axis=1, begin=length - half, end=length))
        length = half
    return F.broadcast_mul(vectors.reshape((0, -1)), n_tokens > 0)


# Each pooling: (B, T, D) token vectors -> one vector per text; padding (id 0) never counts.
# `scores` are the attention scorer's (B, T, 1) per-token scores, None for the others.
def pool_flatten(F, vectors, ids, max_tokens, scores):
    return F.flatten(vectors)


def pool_sum(F, vectors, ids, max_tokens, scores):
    return sum_over_tokens(F, vectors, max_tokens)  # padding rows hold 0: they add nothing


def pool_mean(F, vectors, ids, max_tokens, scores):
    _, n_tokens = token_mask(F, ids)
    return F.broadcast_div(sum_over_tokens(F, vectors, max_tokens), F.maximum(n_tokens, 1))


def pool_max(F, vectors, ids, max_tokens, scores):
    _, n_tokens = token_mask(F, ids)
    return max_over_tokens(F, vectors, max_tokens, n_tokens)


def pool_meanmax(F, vectors, ids, max_tokens, scores):
    mask, n_tokens = token_mask(F, ids)  # padding holds PAD_MAX_VALUE here: the mean needs the mask
    mean = weighted_sum(F, vectors, F.broadcast_div(mask, F.maximum(n_tokens, 1)))
    return F.concat(mean, max_over_tokens(F, vectors, max_tokens, n_tokens), dim=1)


def pool_attention(F, vectors, ids, max_tokens, scores):
    """Learned per-token scores, softmax over this text's tokens only; with the mean."""
    mask, n_tokens = token_mask(F, ids)
    mean = F.broadcast_div(sum_over_tokens(F, vectors, max_tokens), F.maximum(n_tokens, 1))
    weights = F.softmax(scores.reshape((0, -1)) + (mask - 1) * 1e4, axis=1)
    return F.concat(weighted_sum(F, vectors, weights), mean, dim=1)


@dataclass(frozen=True)
class Pooling:
    width: Callable[[int, int], int]  # (embed_dim, max_tokens) -> pooled width: dense shapes known up front
    padding_value: float              # what the frozen padding row holds, so padding never counts
    scorer: bool                      # a learned per-token score (w . vector + b) feeds it
    row_blockable: bool               # a batch is embedded and pooled in blocks of rows (backward reads none)
    pooled_once: bool                 # no learned weight before it and D or 2D wide: each text's pooled
                                      # vector is computed once per data set (pooled.py), not every step
    pool: Callable                    # (F, vectors, ids, max_tokens, scores) -> pooled vectors


# The one table of poolings: config's choices, the model, compare and the bench read it.
POOLINGS = {
    # flatten: its output is the whole block, and T·D wide it would be the embedded rows themselves.
    "flatten": Pooling(lambda d, t: t * d, 0.0, False, False, False, pool_flatten),
    "sum": Pooling(lambda d, t: d, 0.0, False, True, True, pool_sum),
    "mean": Pooling(lambda d, t: d, 0.0, False, True, True, pool_mean),
    "max": Pooling(lambda d, t: d, PAD_MAX_VALUE, False, True, True, pool_max),
    "meanmax": Pooling(lambda d, t: 2 * d, PAD_MAX_VALUE, False, True, True, pool_meanmax),
    # attention: its scorer learns; and its backward reads every block's vectors again (the scores'
    # and weights' gradients), so blocks would all stay alive and only add operators.
    "attention": Pooling(lambda d, t: 2 * d, 0.0, True, False, False, pool_attention),
}


def pooling_named(name):
    """The POOLINGS entry for a name; an unknown name is an error, never a default."""
    try:
        return POOLINGS[name]
    except KeyError:
        raise ValueError(f"unknown pooling {name!r}: expected one of {', '.join(POOLINGS)}") from None


def pool(F, vectors, ids, pooling, max_tokens, scores=None):
    """(B, T, D) token vectors -> one vector per text, by the named pooling."""
    return pooling_named(pooling).pool(F, vectors, ids, max_tokens, scores)


def padding_value(pooling):
    """What the frozen embedding's padding row (id 0) holds for this pooling."""
    return pooling_named(pooling).padding_value


def frozen_table(glove_matrix, pooling):
    """A copy of the (V, D) GloVe matrix with the padding row (id 0) set for this pooling:
    the one place that sets the padding row."""
    table = np.array(glove_matrix, np.float32)
    table[0] = padding_value(pooling)
    return table


def pooled_width(pooling, embed_dim, max_tokens):
    """Width of the pooled vector, so the dense layers' parameters exist right after
    initialize() (no deferred init) and can be broadcast and loaded before the first batch."""
    return pooling_named(pooling).width(embed_dim, max_tokens)


def dense_head(in_units, num_classes, width=128):
    """The classifier on the pooled vector: Dense width relu -> Dense width/2 relu -> Dense K."""
    head = nn.HybridSequential()
    head.add(nn.Dense(width, activation="relu", in_units=in_units),
             nn.Dense(width // 2, activation="relu", in_units=width),
             nn.Dense(num_classes, in_units=width // 2))
    return head


def classify(F, pooled, classifier, dropout):
    """(B, pooled width) -> (B, K) logits: dropout before each dense layer, in training only."""
    x = pooled
    for dense in classifier:
        x = dense(F.Dropout(x, p=dropout) if dropout else x)
    return x


def row_blocks_for(batch_size, max_tokens, embed_dim, pooling, ctx):
    """How many blocks of rows a batch is embedded and pooled in. On CPU, enough that one
    block's (rows, T, D) vectors take about BLOCK_BYTES: pooling then reads them from cache
    while they are fresh, not from memory after the whole batch's (B, T, D) was written.
    One block on GPU, for poolings whose output is the whole block anyway (flatten), and for
    those whose backward reads every block's vectors again (attention)."""
    if ctx.device_type == "gpu" or not pooling_named(pooling).row_blockable:
        return 1
    return max(1, round(batch_size * max_tokens * embed_dim * 4 / BLOCK_BYTES))


def row_blocks(F, ids, n_blocks):
    """(B, T) ids -> n_blocks interleaved blocks of rows: block i holds rows i, i+n, i+2n, ...

    The graph does not know B, so it cannot cut the batch into contiguous slices; a take can.
    Each block has ceil(B / n) rows, counted by a max-pool of stride n over B + n - 1 entries;
    where n does not divide B, the last blocks repeat row B-1 (mode="clip") and
    merge_row_blocks drops the repeats."""
    first_column = F.slice_axis(ids, axis=1, begin=0, end=1).reshape((1, 1, -1)).astype("float32")
    padded = F.concat(first_column, F.zeros((1, 1, n_blocks - 1)), dim=2)    # (1, 1, B + n - 1)
    per_block = F.Pooling(padded, kernel=(n_blocks,), stride=(n_blocks,), pool_type="max")
    starts = F.contrib.arange_like(per_block, axis=2) * n_blocks              # 0, n, 2n, ...
    return [F.take(ids, starts + i, axis=0, mode="clip") for i in range(n_blocks)]


def merge_row_blocks(F, blocks, ids):
    """row_blocks' inverse for per-row outputs: n x (ceil(B / n), K) -> (B, K) in row order."""
    interleaved = F.stack(*blocks, axis=1).reshape((-3, -2))   # row p*n + i is block i's row p
    return F.slice_like(interleaved, ids, axes=(0,))


class TopicClassifier(gluon.HybridBlock):
    def __init__(self, vocab_size, embed_dim, pooling, max_tokens, num_classes, row_blocks=1, dropout=0.0,
                 head_width=128, **kwargs):
        super().__init__(**kwargs)
        self.pooling, self.max_tokens, self.row_blocks, self.dropout = pooling, max_tokens, row_blocks, dropout
        self.pooler = pooling_named(pooling)
        with self.name_scope():
            # Frozen: weights come from GloVe (build_model), no gradient is ever computed.
            self.embedding = nn.Embedding(vocab_size, embed_dim)
            self.embedding.weight.grad_req = "null"
            if self.pooler.scorer:  # one score per token: w . vector + b
                self.attention = nn.Dense(1, flatten=False, in_units=embed_dim)
            self.classifier = dense_head(pooled_width(pooling, embed_dim, max_tokens), num_classes, head_width)

    def hybrid_forward(self, F, ids):
        return classify(F, self.pooled(F, ids), self.classifier, self.dropout)

    def pooled(self, F, ids):
        """(B, T) ids -> (B, pooled width), in self.row_blocks blocks of rows (row_blocks_for)."""
        if self.row_blocks == 1:
            return self.embed_and_pool(F, ids)
        blocks = row_blocks(F, ids, self.row_blocks)
        return merge_row_blocks(F, [self.embed_and_pool(F, block) for block in blocks], ids)

    def embed_and_pool(self, F, ids):
        # BlockGrad: no gradient flows back into the frozen vectors, so backward keeps no
        # block's (rows, T, D) vectors alive and the next block reuses their memory (cached).
        vectors = F.BlockGrad(self.embedding(ids))
        scores = self.attention(vectors) if self.pooler.scorer else None
        return self.pooler.pool(F, vectors, ids, self.max_tokens, scores)

    def trainable_params(self):
        """The dense layers' (and attention scorer's) parameters: the only ones optimized and
        allreduced. The embedding is not among them."""
        params = self.classifier.collect_params()
        if self.pooler.scorer:
            params.update(self.attention.collect_params())
        return params


class PooledClassifier(gluon.HybridBlock):
    """A TopicClassifier's dense layers alone, on pooled vectors: the same Parameters (a step
    updates the model itself, and checkpoints save the model) and the same dropout. What
    training runs where the pooled vectors were computed once (POOLINGS' pooled_once)."""

    def __init__(self, model, **kwargs):
        super().__init__(**kwargs)
        self.dropout = model.dropout
        self.classifier = model.classifier  # shared, not copied
        self.model_params = model.trainable_params()

    def hybrid_forward(self, F, pooled):
        return classify(F, pooled, self.classifier, self.dropout)

    def trainable_params(self):
        return self.model_params


def pooled_classifier(model):
    """model's dense layers on pooled vectors (PooledClassifier), hybridized as build_model's."""
    head = PooledClassifier(model)
    head.hybridize(static_alloc=True, static_shape=True)
    return head


def build_model(glove_matrix, pooling, max_tokens, ctx, batch_size=PREDICT_BATCH_SIZE, row_blocks=None, *,
                num_classes, dropout=0.0, head_width=128):
    """A hybridized classifier of num_classes outputs on ctx, with the embedding set to
    glove_matrix (V, D). It takes any batch size; its row blocks are sized for batch_size rows
    (training passes its batch).
    row_blocks: a fixed number instead of row_blocks_for's (the bench and tests compare them)."""
    vocab_size, embed_dim = glove_matrix.shape
    if row_blocks is None:
        row_blocks = row_blocks_for(batch_size, max_tokens, embed_dim, pooling, ctx)
    model = TopicClassifier(vocab_size, embed_dim, pooling, max_tokens, num_classes, row_blocks, dropout, head_width)
    model.initialize(init.Xavier(), ctx=ctx)
    model.embedding.weight.set_data(frozen_table(glove_matrix, pooling))
    model.hybridize(static_alloc=True, static_shape=True)
    return model


def parameter_counts(model):
    """-> (frozen, trainable) numbers of scalars; the embedding is the frozen part."""
    frozen = trainable = 0
    for param in model.collect_params().values():
        n = 1
        for dim in param.shape:
            n *= dim
        if param.grad_req == "null":
            frozen += n
        else:
            trainable += n
    return frozen, trainable
