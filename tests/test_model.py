import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd

from distjob.model import (BLOCK_BYTES, POOLINGS, build_model, frozen_table, pool, pooled_classifier, pooling_named,
                           row_blocks_for)
from distjob.scoring import StepLoss

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
    vectors = mx.nd.array(frozen_table(GLOVE, pooling)[IDS])
    scores = rng.standard_normal(IDS.shape).astype(np.float32)
    got = pool(mx.nd, vectors, mx.nd.array(IDS, dtype="int32"), pooling, IDS.shape[1],
               mx.nd.array(scores[:, :, None]) if pooling == "attention" else None).asnumpy()
    expected = numpy_pool(pooling, scores)
    assert got.shape == expected.shape
    assert np.allclose(got[np.arange(32) != 3], expected[np.arange(32) != 3], atol=1e-5)


@pytest.mark.parametrize("pooling", POOLINGS)
def test_training_changes_dense_weights_but_not_the_embedding(pooling):
    model = build_model(GLOVE, pooling, IDS.shape[1], mx.cpu(), len(IDS), num_classes=4)
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


def classifier(pooling, n_blocks):
    return build_model(GLOVE, pooling, IDS.shape[1], mx.cpu(), len(IDS), row_blocks=n_blocks, num_classes=4)


def logits_and_grads(model, ids):
    labels = mx.nd.array(np.arange(len(ids)) % 4)
    with autograd.record():
        logits = model(mx.nd.array(ids, dtype="int32"))
        loss = mx.gluon.loss.SoftmaxCrossEntropyLoss()(logits, labels)
    loss.backward()
    return logits.asnumpy(), [p.grad().asnumpy() for p in model.trainable_params().values()]


@pytest.mark.parametrize("pooling", POOLINGS)
def test_row_blocks_give_the_one_block_logits_and_gradients_at_any_batch_size(pooling, tmp_path):
    one_block, five_blocks = classifier(pooling, 1), classifier(pooling, 5)
    one_block.save_parameters(str(tmp_path / "p.params"))
    five_blocks.load_parameters(str(tmp_path / "p.params"))
    # Fewer rows than blocks, not a multiple of 5, a multiple, one more: the same graph takes all.
    for n_rows in (1, 3, 10, 11, 32):
        ids = IDS[rng.permutation(len(IDS))[:n_rows]]
        expected_logits, expected_grads = logits_and_grads(one_block, ids)
        logits, grads = logits_and_grads(five_blocks, ids)
        assert logits.shape == (n_rows, 4)
        assert np.allclose(logits, expected_logits, atol=1e-5), n_rows
        for got, expected in zip(grads, expected_grads):
            assert np.allclose(got, expected, atol=1e-5), n_rows


@pytest.mark.parametrize("pooling", [name for name, entry in POOLINGS.items() if entry.pooled_once])
def test_the_dense_layers_on_pooled_vectors_are_the_model_on_ids(pooling):
    model = build_model(GLOVE, pooling, IDS.shape[1], mx.cpu(), len(IDS), num_classes=4, dropout=0.3)
    head = pooled_classifier(model)
    assert [p for p in head.trainable_params().values()] == [p for p in model.trainable_params().values()]
    ids = mx.nd.array(IDS, dtype="int32")
    pooled = model.pooled(mx.nd, ids)
    labels = mx.nd.array(np.arange(len(IDS)) % 4)
    results = []
    for block, inputs in ((model, ids), (head, pooled)):
        mx.random.seed(7)  # the same dropout masks
        with autograd.record():
            logits = block(inputs)
            loss = mx.gluon.loss.SoftmaxCrossEntropyLoss()(logits, labels)
        loss.backward()
        results.append([logits.asnumpy()] + [p.grad().asnumpy() for p in model.trainable_params().values()])
    for got, expected in zip(*results):  # bit for bit: the same operators on the same values
        assert np.array_equal(got, expected)


@pytest.mark.filterwarnings("ignore:Cannot decide type")
def test_an_exported_row_blocked_model_scores_any_batch_size(tmp_path):
    model = classifier("mean", 4)
    ids = mx.nd.array(IDS[:7], dtype="int32")
    expected = model(ids).asnumpy()
    model.export(str(tmp_path / "model"))
    imported = mx.gluon.SymbolBlock.imports(str(tmp_path / "model-symbol.json"), ["data"],
                                            str(tmp_path / "model-0000.params"))
    assert np.allclose(imported(ids).asnumpy(), expected, atol=1e-6)
    assert np.allclose(imported(ids[:2]).asnumpy(), expected[:2], atol=1e-6)


def test_row_blocks_are_sized_to_the_cpu_cache_and_only_on_cpu():
    for batch_size, dim in ((1024, 300), (4096, 300), (4096, 50), (8192, 100)):
        n = row_blocks_for(batch_size, 50, dim, "mean", mx.cpu())
        assert n > 1
        block_bytes = batch_size / n * 50 * dim * 4
        assert BLOCK_BYTES / 1.5 < block_bytes < BLOCK_BYTES * 1.5, (batch_size, dim, n)
    assert row_blocks_for(64, 50, 300, "mean", mx.cpu()) == 1       # one small batch: one block
    assert row_blocks_for(4096, 50, 300, "flatten", mx.cpu()) == 1  # its output is all of (B, T*D)
    assert row_blocks_for(4096, 50, 300, "attention", mx.cpu()) == 1  # its backward reads every block again
    assert row_blocks_for(4096, 50, 300, "mean", mx.gpu(0)) == 1     # no cache to stay in


def test_an_unknown_pooling_is_an_error_not_a_default():
    with pytest.raises(ValueError, match="unknown pooling 'avg'"):
        build_model(GLOVE, "avg", IDS.shape[1], mx.cpu(), num_classes=4)


@pytest.mark.parametrize("pooling", POOLINGS)
def test_the_frozen_table_alone_sets_the_padding_row(pooling):
    table = frozen_table(GLOVE, pooling)
    assert np.all(table[0] == pooling_named(pooling).padding_value)
    assert np.array_equal(table[1:], GLOVE[1:]) and not np.array_equal(GLOVE[0], table[0])


def test_the_head_width_sets_the_dense_layers():
    model = build_model(GLOVE, "attention", IDS.shape[1], mx.cpu(), len(IDS), num_classes=4, head_width=32)
    assert [dense.weight.shape for dense in model.classifier] == [(32, 16), (16, 32), (4, 16)]
    assert model(mx.nd.array(IDS, dtype="int32")).shape == (len(IDS), 4)


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_label_smoothing_is_cross_entropy_against_the_smoothed_target(smoothing):
    logits = rng.standard_normal((6, 4)).astype(np.float32)
    labels = np.array([0, 1, 2, 3, 1, 2])
    log_probs = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    target = np.eye(4)[labels] * (1 - smoothing) + smoothing / 4
    got = StepLoss(smoothing, 4).of(mx.nd.array(logits), mx.nd.array(labels)).asnumpy()
    np.testing.assert_allclose(got, -(target * log_probs).sum(1), rtol=1e-5)
    assert (smoothing == 0) == np.allclose(got, -log_probs[np.arange(6), labels], rtol=1e-5)
