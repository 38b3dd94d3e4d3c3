import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd

from distjob.config import POOLINGS
from distjob.model import build_model, padding_value, pool

rng = np.random.default_rng(0)
GLOVE = rng.standard_normal((300, 8)).astype(np.float32)
IDS = rng.integers(1, 300, (32, 11)).astype(np.int32)
IDS[:, 7:] = 0        # padding
IDS[3] = 0            # a text with no known token at all
IDS[4, 1:] = 0        # a one-token text


def numpy_pool(pooling, scores=None):
    vectors, mask = GLOVE[IDS].copy(), IDS != 0
    vectors[~mask] = 0
    n = np.maximum(mask.sum(1, keepdims=True), 1)
    mean = vectors.sum(1) / n
    maxed = np.where(mask[:, :, None], vectors, -np.inf).max(1)
    maxed[~mask.any(1)] = 0
    if pooling == "attention":
        with np.errstate(invalid="ignore"):  # the empty text (row 3) is not compared
            s = np.where(mask, scores, -np.inf)
            w = np.exp(s - s.max(1, keepdims=True))
            w /= w.sum(1, keepdims=True)
        return np.hstack([(w[:, :, None] * vectors).sum(1), mean])
    return {"flatten": vectors.reshape(len(IDS), -1), "sum": vectors.sum(1), "mean": mean,
            "max": maxed, "meanmax": np.hstack([mean, maxed])}[pooling]


@pytest.mark.parametrize("pooling", [p for p in POOLINGS if p != "flatten"])
def test_pooling_matches_numpy_and_ignores_padding(pooling):
    matrix = GLOVE.copy()
    matrix[0] = padding_value(pooling)
    vectors = mx.nd.array(matrix[IDS])
    scores = rng.standard_normal(IDS.shape).astype(np.float32)
    got = pool(mx.nd, vectors, mx.nd.array(IDS, dtype="int32"), pooling, IDS.shape[1],
               mx.nd.array(scores[:, :, None]) if pooling == "attention" else None).asnumpy()
    expected = numpy_pool(pooling, scores)
    assert got.shape == expected.shape
    assert np.allclose(got[np.arange(32) != 3], expected[np.arange(32) != 3], atol=1e-5)


@pytest.mark.parametrize("pooling", POOLINGS)
def test_training_changes_dense_weights_but_not_the_embedding(pooling):
    model = build_model(GLOVE, pooling, IDS.shape[1], mx.cpu())
    trainer = mx.gluon.Trainer(model.trainable_params(), "adam", {"learning_rate": 0.01})
    before = {name: p.data().asnumpy().copy() for name, p in model.collect_params().items()}
    labels = mx.nd.array(rng.integers(0, 4, len(IDS)))
    for _ in range(3):
        with autograd.record():
            loss = mx.gluon.loss.SoftmaxCrossEntropyLoss()(model(mx.nd.array(IDS, dtype="int32")), labels)
        loss.backward()
        trainer.step(len(IDS))
    embedding = model.embedding.weight
    assert embedding.grad_req == "null"
    with pytest.raises(RuntimeError):  # no gradient buffer exists for the embedding at all
        embedding.grad()
    assert np.array_equal(embedding.data().asnumpy(), before[embedding.name])
    assert embedding.name not in model.trainable_params().keys()
    for name in model.trainable_params().keys():
        if name.endswith("weight"):
            assert not np.array_equal(model.collect_params()[name].data().asnumpy(), before[name]), name
