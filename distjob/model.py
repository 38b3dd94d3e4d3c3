"""ids -> frozen GloVe embedding -> pooled vector -> Dense 128 relu -> Dense 64 relu -> Dense 4."""
from mxnet import gluon, init
from mxnet.gluon import nn

NUM_CLASSES = 4
PAD_MAX_VALUE = -1e4  # the padding row's value under max pooling: below any GloVe component


def pool(F, vectors, ids, pooling, max_tokens, attention_scores=None):
    """(B, T, D) token vectors -> one vector per text; padding (id 0) never counts.

    flatten (B, T*D); sum, mean, max (B, D); meanmax, attention (B, 2D).
    Padding never counts through what the frozen padding row holds (padding_value): 0 for
    sum, mean and attention, so a plain sum over all T tokens leaves it out; PAD_MAX_VALUE
    for max and meanmax, so it never wins a max (meanmax's mean masks it out instead).
    Measured on CPU (B=1024, T=50, hybridized; python -m distjob.bench): the plain token sum
    as a 1x1 convolution is ~5x faster than the batched product weights(B,1,T) x vectors(B,T,D),
    which is ~6x faster than vectors.sum(axis=1); max as a log-tree of elementwise maximums
    is ~6x faster than .max(axis=1).
    """
    if pooling == "flatten":
        return F.flatten(vectors)
    mask = (ids != 0).astype("float32")                              # (B, T)
    n_tokens = mask.sum(axis=1, keepdims=True)                       # (B, 1)
    if pooling == "max":
        return max_over_tokens(F, vectors, max_tokens, n_tokens)
    if pooling == "meanmax":  # padding holds PAD_MAX_VALUE here: the mean needs the mask
        mean = weighted_sum(F, vectors, F.broadcast_div(mask, F.maximum(n_tokens, 1)))
        return F.concat(mean, max_over_tokens(F, vectors, max_tokens, n_tokens), dim=1)
    total = sum_over_tokens(F, vectors, max_tokens)                  # padding rows add 0
    if pooling == "sum":
        return total
    mean = F.broadcast_div(total, F.maximum(n_tokens, 1))
    if pooling == "mean":
        return mean
    # attention: learned per-token scores, softmax over this text's tokens only
    weights = F.softmax(attention_scores.reshape((0, -1)) + (mask - 1) * 1e4, axis=1)
    return F.concat(weighted_sum(F, vectors, weights), mean, dim=1)


def weighted_sum(F, vectors, weights):
    """(B, T, D) with per-text token weights (B, T) -> (B, D): one batched product."""
    return F.batch_dot(weights.expand_dims(1), vectors).reshape((0, -1))


def sum_over_tokens(F, vectors, max_tokens):
    """(B, T, D) -> (B, D), every token weighted 1: a 1x1 convolution that reads the T tokens
    as input channels through one all-ones filter, a single oneDNN/cuDNN pass."""
    ones = F.ones((1, max_tokens, 1))
    return F.Convolution(vectors, ones, kernel=(1,), num_filter=1, no_bias=True).reshape((0, -1))


def max_over_tokens(F, vectors, length, n_tokens):
    """Max over axis 1 by halving. The padding row holds PAD_MAX_VALUE (padding_value),
    so it never wins and no (B, T, D) mask is needed; a text with no tokens pools to 0."""
    while length > 1:
        half = (length + 1) // 2  # odd length: the halves share the middle row, harmless for max
        vectors = F.maximum(F.slice_axis(vectors, axis=1, begin=0, end=half),
                            F.slice_axis(vectors, axis=1, begin=length - half, end=length))
        length = half
    return F.broadcast_mul(vectors.reshape((0, -1)), n_tokens > 0)


def padding_value(pooling):
    """What the frozen embedding's padding row (id 0) holds for this pooling."""
    return PAD_MAX_VALUE if pooling in ("max", "meanmax") else 0.0


def frozen_table(glove_matrix, pooling):
    """A copy of the (V, D) GloVe matrix with the padding row (id 0) set for this pooling."""
    table = glove_matrix.copy()
    table[0] = padding_value(pooling)
    return table


def pooled_width(pooling, embed_dim, max_tokens):
    """Width of pool()'s output, so the dense layers' shapes are known up front: their
    parameters exist right after initialize() (no deferred init) and can be broadcast and
    loaded before the first batch."""
    return {"flatten": max_tokens * embed_dim, "meanmax": 2 * embed_dim,
            "attention": 2 * embed_dim}.get(pooling, embed_dim)


def dense_head(in_units):
    """The classifier on the pooled vector: Dense 128 relu -> Dense 64 relu -> Dense 4."""
    head = nn.HybridSequential()
    head.add(nn.Dense(128, activation="relu", in_units=in_units),
             nn.Dense(64, activation="relu", in_units=128),
             nn.Dense(NUM_CLASSES, in_units=64))
    return head


class TopicClassifier(gluon.HybridBlock):
    def __init__(self, vocab_size, embed_dim, pooling, max_tokens, **kwargs):
        super().__init__(**kwargs)
        self.pooling, self.max_tokens = pooling, max_tokens
        with self.name_scope():
            # Frozen: weights come from GloVe (build_model), no gradient is ever computed.
            self.embedding = nn.Embedding(vocab_size, embed_dim)
            self.embedding.weight.grad_req = "null"
            if pooling == "attention":  # one score per token: w . vector + b
                self.attention = nn.Dense(1, flatten=False, in_units=embed_dim)
            self.classifier = dense_head(pooled_width(pooling, embed_dim, max_tokens))

    def hybrid_forward(self, F, ids):
        vectors = self.embedding(ids)
        scores = self.attention(vectors) if self.pooling == "attention" else None
        return self.classifier(pool(F, vectors, ids, self.pooling, self.max_tokens, scores))

    def trainable_params(self):
        """The dense layers' (and attention scorer's) parameters: the only ones optimized
        and allreduced. The embedding is not among them."""
        params = self.classifier.collect_params()
        if self.pooling == "attention":
            params.update(self.attention.collect_params())
        return params


def build_model(glove_matrix, pooling, max_tokens, ctx):
    """A hybridized classifier on ctx with the embedding set to glove_matrix (V, D)."""
    vocab_size, embed_dim = glove_matrix.shape
    model = TopicClassifier(vocab_size, embed_dim, pooling, max_tokens)
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
