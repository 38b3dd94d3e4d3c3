"""Text -> tokens -> ids, in small pieces: the tokenizer (one text, or every text in bulk),
the vocabulary, and the lookup of each token's id into (rows, max_tokens) int32 arrays.
prepare.py wires them into a data set's ids; the tools encode their texts with `encode`.
"""
import collections
import re
from dataclasses import dataclass

import gluonnlp
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

PAD, UNK = "<pad>", "<unk>"  # ids 0 and 1
TOKEN_RE = re.compile(r"\w+")


def decode_utf8(raw):
    """bytes -> (str, whether some bytes were not UTF-8 and became U+FFFD)."""
    try:
        return raw.decode("utf-8"), False
    except UnicodeDecodeError:
        return raw.decode("utf-8", errors="replace"), True


def tokenize(text):
    """The tutorial pipeline's tokenizer: lowercase, then runs of word characters."""
    return TOKEN_RE.findall(text.lower())


@dataclass
class Tokens:
    """Every text's tokens at once: flat in text order; text i's are flat[offsets[i]:offsets[i + 1]]."""
    flat: pa.Array        # strings
    offsets: np.ndarray   # n_rows + 1, nondecreasing

    @property
    def n_rows(self):
        return len(self.offsets) - 1


# Each ASCII byte -> itself lowercased if it is a word character (\w), else a space; the bytes of
# non-ASCII characters stay as they are (bytes.translate's table).
ASCII_WORD_BYTES = bytes([c + 32 if 65 <= c <= 90 else c if chr(c).isalnum() or c == 95 else 32
                          for c in range(128)] + list(range(128, 256)))


def tokenize_all(texts):
    """tokenize() of every text (a list, or a pyarrow string array), in bulk: ASCII texts by one
    byte-table translation (word characters lowercased, the rest spaces) and pyarrow's split at
    spaces; the few others by tokenize() itself, so the tokens are tokenize()'s exactly."""
    texts = texts if isinstance(texts, pa.Array) else pa.array(texts, pa.string())
    if not len(texts):
        return Tokens(pa.array([], pa.string()), np.zeros(1, np.int64))
    offsets = np.frombuffer(texts.buffers()[1], np.int32)[texts.offset:texts.offset + len(texts) + 1]
    first, last = int(offsets[0]), int(offsets[-1])
    chars = bytearray(memoryview(texts.buffers()[2] or b"")[first:last]).translate(ASCII_WORD_BYTES)
    lowered = pa.StringArray.from_buffers(len(texts), pa.py_buffer(offsets - np.int32(first)), pa.py_buffer(chars))
    non_ascii_bytes = first + np.flatnonzero(np.frombuffer(chars, np.uint8) >= 128)
    other_rows = np.unique(np.searchsorted(offsets, non_ascii_bytes, "right") - 1)  # the texts they are in
    if len(other_rows):  # their tokens from tokenize(), one space between each
        is_other = np.zeros(len(texts), bool)
        is_other[other_rows] = True
        lowered = pc.replace_with_mask(lowered, pa.array(is_other), pa.array(
            [" ".join(tokenize(texts[int(row)].as_py())) for row in other_rows], pa.string()))
    trimmed = pc.ascii_trim_whitespace(lowered)
    lists = pc.ascii_split_whitespace(trimmed)  # a run of spaces splits once; "" splits into [""]
    flat, token_offsets = lists.flatten(), lists.offsets.to_numpy()
    wordless = (pc.binary_length(trimmed).to_numpy(zero_copy_only=False) == 0)
    if wordless.any():  # drop the "" each text without a word split into
        keep = np.ones(len(flat), bool)
        keep[token_offsets[:-1][wordless]] = False
        flat = flat.filter(pa.array(keep))
        token_offsets = np.concatenate([[0], np.cumsum(np.diff(token_offsets) - wordless)])
    return Tokens(flat, token_offsets.astype(np.int64))


def build_vocab(tokens):
    """gluonnlp Vocab over the training Tokens, padding at id 0 and unknown at id 1."""
    counts = pc.value_counts(tokens.flat)
    return vocab_of_counts(dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist())))


def vocab_of_counts(counts):
    """gluonnlp Vocab of {token: count}: every token, the most frequent first (ties in
    alphabetical order, whatever order counts is in); padding at id 0, unknown at id 1."""
    return gluonnlp.Vocab(collections.Counter(counts), unknown_token=UNK, padding_token=PAD, bos_token=None,
                          eos_token=None, token_to_idx={PAD: 0, UNK: 1})


def ids_of(words, vocab):
    """Each word of a pyarrow string array -> its id in vocab (unknown's if it has none)."""
    ids = pc.index_in(words, value_set=pa.array(vocab.idx_to_token, pa.string()))
    return ids.fill_null(vocab[UNK]).to_numpy(zero_copy_only=False).astype(np.int32)


def layout(values, offsets, max_tokens, fill):
    """One value per token (text i's at offsets[i]:offsets[i + 1]) -> (n_rows, max_tokens) int32:
    each text's first max_tokens values, then fill."""
    counts = np.diff(offsets)
    if (counts > max_tokens).any():  # clip: keep the tokens before each text's max_tokens-th
        values = values[np.arange(len(values)) - np.repeat(offsets[:-1], counts) < max_tokens]
    out = np.full((len(counts), max_tokens), fill, np.int32)
    out[np.arange(max_tokens) < np.minimum(counts, max_tokens)[:, None]] = values  # row by row, in order
    return out


def encode(texts, vocab, max_tokens):
    """Texts (a list, or a pyarrow string array) -> one int32 (N, max_tokens) array, clipped,
    padded with 0: each distinct word looked up once (pyarrow's hash tables), never per batch."""
    tokens = tokenize_all(texts)
    words = pc.dictionary_encode(tokens.flat)
    return layout(ids_of(words.dictionary, vocab)[words.indices.to_numpy()], tokens.offsets, max_tokens, fill=0)
