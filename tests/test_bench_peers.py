"""The bench's peers section (7): PyTorch's version of distjob's model computes what distjob's
does, and the bench prints the PyTorch, scikit-learn and fastText rows, or says that the PyTorch
or fastText rows are skipped where `import torch` or `import fasttext` fails. Timings are not asserted."""
import json
import math
import os
import sys

import numpy as np
import pyarrow as pa
import pytest

from conftest import run
from distjob import generated

TINY = ["--peers-only", "--json", "--rows", "192", "--batch-size", "64", "--dims", "50,300", "--hvd-dims", "50",
        "--min-seconds", "0", "--steps", "2", "--warmup", "1"]
TORCH_KEYS = {f"peers.{d}.torch.{p}" for d in ("50d", "300d")
              for p in ("mean", "sum", "max", "meanmax", "attention", "flatten")} | \
    {"peers.50d.torch_ddp.np2.mean"}
SKLEARN_KEYS = {"peers.sklearn.tfidf_linearsvc.fit_seconds", "peers.sklearn.tfidf_linearsvc.accuracy"}
FASTTEXT_KEYS = {f"peers.fasttext.{name}.{value}" for name in ("bigrams", "bigrams_glove")
                 for value in ("fit_seconds", "accuracy")}


def bench(args, env=None):
    """-> (the JSON report, stderr) of a tiny --peers-only bench run; fails the test on an error."""
    result = run([sys.executable, "-m", "distjob.bench", *TINY, *args], timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads(result.stdout), result.stderr


@pytest.mark.parametrize("pooling", ["mean", "sum", "max", "meanmax", "attention", "flatten"])
def test_torch_model_is_distjobs_model(pooling):
    """The same table, ids (padding, an empty text, a full one) and dense weights give the same
    pooled vectors and logits in PyTorch as in distjob: the bench compares the same model."""
    pytest.importorskip("torch")  # imported by conftest.py already, before horovod.mxnet
    import mxnet as mx
    from distjob.bench import torch_peer
    from distjob.model import build_model, frozen_table

    rng = np.random.default_rng(0)
    matrix = rng.standard_normal((40, 8)).astype(np.float32) * 0.4
    ids = rng.integers(1, 40, (6, 5)).astype(np.int32)
    ids[0, 2:] = 0   # padding after two tokens
    ids[1, :] = 0    # no tokens at all
    ids[3, 1:] = 0   # one token
    distjob = build_model(matrix, pooling, 5, mx.cpu(), len(ids), row_blocks=2, num_classes=4)
    theirs = torch_peer.TorchClassifier(frozen_table(matrix, pooling), pooling, 5, 4)
    pairs = list(zip(distjob.classifier, [layer for layer in theirs.classifier
                                          if isinstance(layer, torch_peer.nn.Linear)], strict=True))
    if pooling == "attention":
        pairs.append((distjob.attention, theirs.attention))
    with torch_peer.torch.no_grad():
        for dense, linear in pairs:
            linear.weight.copy_(torch_peer.torch.from_numpy(dense.weight.data().asnumpy()))
            linear.bias.copy_(torch_peer.torch.from_numpy(dense.bias.data().asnumpy()))
        pooled, logits = theirs.pooled(torch_peer.torch.from_numpy(ids)), theirs(torch_peer.torch.from_numpy(ids))
    x = mx.nd.array(ids, dtype="int32")
    np.testing.assert_allclose(pooled.numpy(), distjob.pooled(mx.nd, x).asnumpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(logits.numpy(), distjob(x).asnumpy(), rtol=1e-5, atol=1e-6)
    assert not pooled[1].any()  # an empty text pools to zeros in both


def test_bench_prints_the_peers_rows(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("fasttext")
    labels, texts = generated.generate_rows(240, seed=3)
    generated.write_labeled_csv(tmp_path / "train.csv", labels[:200], texts[:200])
    generated.write_labeled_csv(tmp_path / "test.csv", labels[200:], texts[200:])
    report, stderr = bench(["--data-dir", str(tmp_path)])
    rows = {row["key"]: row for row in report["rows"]}
    assert set(rows) == TORCH_KEYS | SKLEARN_KEYS | FASTTEXT_KEYS
    for key in TORCH_KEYS:
        assert rows[key]["unit"] == "samples/s" and rows[key]["value"] > 0 and math.isfinite(rows[key]["value"])
        assert rows[key]["ratio"] is None  # --peers-only: no distjob rows to compare with
    assert 0 < rows["peers.sklearn.tfidf_linearsvc.accuracy"]["value"] <= 1
    assert str(tmp_path / "test.csv") in rows["peers.sklearn.tfidf_linearsvc.accuracy"]["note"]
    assert rows["peers.sklearn.tfidf_linearsvc.fit_seconds"]["value"] > 0
    assert "peers" not in report  # nothing skipped
    for row in report["rows"]:
        assert row["name"] in stderr, row["name"]


def without(tmp_path, *modules):
    """An environment where these modules cannot be imported: each, first on PYTHONPATH, raises ImportError."""
    for module in modules:
        (tmp_path / f"{module}.py").write_text(f'raise ImportError("no {module} here")\n')
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}


def test_bench_without_torch_or_fasttext_skips_their_rows(tmp_path):
    """A torch and a fasttext that cannot be imported: the bench still succeeds, says their rows
    are skipped and how to install them, and prints scikit-learn's."""
    report, stderr = bench([], env=without(tmp_path, "torch", "fasttext"))
    assert {row["key"] for row in report["rows"]} == SKLEARN_KEYS
    for key, library in (("peers", "PyTorch"), ("fasttext", "fastText")):
        assert f"{library} rows skipped" in report[key] and "pip install -e '.[peers]'" in report[key]
        assert report[key] in stderr
    accuracy = next(row for row in report["rows"] if row["key"] == "peers.sklearn.tfidf_linearsvc.accuracy")
    assert 0 < accuracy["value"] <= 1 and "held out" in accuracy["note"]


def test_bench_prints_fasttexts_rows_with_and_without_glove(tmp_path):
    """fastText on the bench's rows, without torch: both its rows, the GloVe one saying how many
    vectors it started from; on generated topics both beat chance (0.25) by far."""
    pytest.importorskip("fasttext")
    report, _ = bench([], env=without(tmp_path, "torch"))
    rows = {row["key"]: row for row in report["rows"]}
    assert set(rows) == SKLEARN_KEYS | FASTTEXT_KEYS and "fasttext" not in report
    for name in ("bigrams", "bigrams_glove"):
        assert 0.5 < rows[f"peers.fasttext.{name}.accuracy"]["value"] <= 1
        assert rows[f"peers.fasttext.{name}.fit_seconds"]["value"] > 0
    assert "wordNgrams 2" in rows["peers.fasttext.bigrams.fit_seconds"]["note"]
    assert ".vec" in rows["peers.fasttext.bigrams_glove.fit_seconds"]["note"]


def test_the_vec_file_holds_glove_for_the_texts_words_in_fasttexts_format(tmp_path):
    from distjob.cheap_baselines import write_vec
    tokens, vectors = pa.array(["the", "oil", "price", "zebra"]), np.arange(8, dtype=np.float32).reshape(4, 2) / 4
    assert write_vec(tmp_path / "glove.vec", (tokens, vectors), ["Oil price, up", "the oil"]) == 3
    lines = (tmp_path / "glove.vec").read_text().splitlines()
    assert lines[0] == "3 2"  # count, width; then a word and its vector a line ("up" has none, "zebra" is in no text)
    assert sorted(lines[1:]) == ["oil 0.5 0.75", "price 1 1.25", "the 0 0.25"]
