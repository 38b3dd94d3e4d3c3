"""Scoring a model: class probabilities for ids or raw texts, loss and accuracy, and the
per-step totals the training loop keeps on the device."""
import mxnet as mx
import numpy as np
from mxnet import gluon

from .model import PREDICT_BATCH_SIZE
from .text import encode


class BatchTotals(gluon.HybridBlock):
    """A training batch's summed loss and its number of correct predictions, as one (2,) array.
    Hybridized: one operator call per step for the python thread, not four (sum, argmax, ==, sum)."""

    def hybrid_forward(self, F, loss, logits, labels):
        return F.concat(loss.sum(), (logits.argmax(axis=1) == labels).sum(), dim=0)


class SmoothedCrossEntropy(gluon.HybridBlock):
    """Cross entropy against 1 - smoothing on the true class plus smoothing / K on every class
    (label smoothing, Szegedy et al.): the logits are not pushed apart without end."""

    def __init__(self, smoothing, num_classes, **kwargs):
        super().__init__(**kwargs)
        self.smoothing, self.num_classes = smoothing, num_classes

    def hybrid_forward(self, F, logits, labels):
        target = F.one_hot(labels, self.num_classes) * (1 - self.smoothing) + self.smoothing / self.num_classes
        return -(F.log_softmax(logits, axis=1) * target).sum(axis=1)


class StepLoss:
    """A training step's loss and its batch totals, each hybridized: one operator call a step
    each, not four: at small batches the python thread is the limit."""

    def __init__(self, label_smoothing=0.0, num_classes=None):
        self.of = SmoothedCrossEntropy(label_smoothing, num_classes) if label_smoothing else \
            gluon.loss.SoftmaxCrossEntropyLoss()
        self.totals = BatchTotals()
        for block in (self.of, self.totals):
            block.hybridize(static_alloc=True, static_shape=True)


def predict_probs(model, ids, ctx, batch_size=PREDICT_BATCH_SIZE):
    """(N, max_tokens) int32 ids -> (N, K) class probabilities, as numpy."""
    probs = []
    for start in range(0, len(ids), batch_size):
        batch = mx.nd.array(ids[start:start + batch_size], ctx=ctx, dtype="int32")
        probs.append(mx.nd.softmax(model(batch)))
    return np.concatenate([p.asnumpy() for p in probs]) if probs else np.zeros((0, 0), np.float32)  # no rows


def text_probs(model, vocab, max_tokens, texts, ctx):
    """Raw texts -> (N, K) class probabilities: tokenized and encoded as in training."""
    return predict_probs(model, encode(texts, vocab, max_tokens), ctx)


def loss_and_accuracy(probs, labels):
    """Mean cross-entropy and accuracy from predicted probabilities."""
    picked = probs[np.arange(len(labels)), labels]
    return float(-np.log(np.maximum(picked, 1e-12)).mean()), float((probs.argmax(1) == labels).mean())
