import hashlib
import http.server
import os
import threading

import numpy as np
import pytest

from distjob import data, download, generated, readers
from distjob.config import UserError
from distjob.text import PAD, UNK, build_vocab, encode, tokenize, tokenize_all
from conftest import AGNEWS


def test_tokenize_lowercases_word_runs():
    assert tokenize("Fears for T N pension, after-talks: #39;OK") == \
        ["fears", "for", "t", "n", "pension", "after", "talks", "39", "ok"]


def test_encode_matches_a_token_by_token_lookup():
    labels, texts = generated.generate_rows(300, seed=1)
    vocab = build_vocab(tokenize_all(texts[:200]))  # later rows may hold unknown words
    texts += ["Unseen words only", "", "... !!"]
    ids = encode(texts, vocab, max_tokens=20)
    expected = np.zeros_like(ids)
    for row, text in enumerate(texts):
        for col, tok in enumerate(tokenize(text)[:20]):
            expected[row, col] = vocab.token_to_idx.get(tok, 1)
    assert vocab.idx_to_token[:2] == [PAD, UNK]
    assert ids.dtype == np.int32 and np.array_equal(ids, expected)


def tokens_by_text(tokens):
    flat, offsets = tokens.flat.to_pylist(), tokens.offsets.tolist()
    return [flat[start:end] for start, end in zip(offsets, offsets[1:])]


def non_ascii_texts(n, seed):
    """Words of many scripts, accents, digits of other systems, ligatures, dotted capitals."""
    rng = np.random.default_rng(seed)
    pieces = ["Café", "naïve", "İstanbul", "ŞEKER", "straße", "ﬁnance", "Ⅻ", "٣٤", "日本語", "Москва", "σοφία",
              "ΣΟΦΟΣ", "x²", "e\u0301", "a_b", "--", "  ", "\t", "don't", "U.S.", "😀", "Ǆemal", "ﬀ", "K"]
    return [" ".join(rng.choice(pieces, rng.integers(0, 12))) for _ in range(n)]


@pytest.mark.parametrize("source", ["generated non-ASCII", "test.csv", "train_10k.csv"])
def test_bulk_tokens_equal_tokenize_on_every_row(source):
    if source == "generated non-ASCII":
        texts = non_ascii_texts(3000, seed=5) + generated.generate_rows(500, seed=5)[1]
    elif (AGNEWS / source).exists():
        texts = readers.read_labeled_csv(AGNEWS / source)[1]
    else:
        pytest.skip(f"{source} not present")
    tokens = tokenize_all(texts)
    assert tokens_by_text(tokens) == [tokenize(text) for text in texts]
    vocab = build_vocab(tokens)
    assert vocab.token_to_idx == build_vocab(tokenize_all(texts[::-1])).token_to_idx


def test_generator_is_deterministic_and_balanced():
    a, b, c = generated.generate_rows(400, 3), generated.generate_rows(400, 3), generated.generate_rows(400, 4)
    assert a[1] == b[1] and a[1] != c[1]
    assert np.bincount(a[0]).tolist() == [100] * 4


def test_csv_round_trip(tmp_path):
    labels, texts = generated.generate_rows(50, 0)
    generated.write_labeled_csv(tmp_path / "train.csv", labels, texts)
    read_labels, read_texts = readers.read_labeled_csv(tmp_path / "train.csv")
    assert np.array_equal(read_labels, labels) and read_texts == texts


@pytest.mark.parametrize("content, message", [
    ('"1","a","b"\n"0","title","text"\n', r"bad\.csv:2: class must be a whole number from 1, got '0'"),
    ('"1","a","b"\n"x","title","text"\n', r"bad\.csv:2: class must be a whole number from 1, got 'x'"),
    ('"1","a","b"\n"2"\n', r"bad\.csv:2: expected a class and 1 or more text columns, got 1 column"),
    ("", r"bad\.csv: file is empty"),
    ('"1","a","b"\n\n"2","c","d"\n', r"bad\.csv:2: expected a class and 1 or more text columns, got 0 column"),
])
@pytest.mark.parametrize("reader", [readers.read_labeled_csv, readers.read_labeled_arrow])
def test_bad_csv_is_named_with_its_line(tmp_path, content, message, reader):
    (tmp_path / "bad.csv").write_text(content)
    with pytest.raises(UserError, match=message):
        reader(tmp_path / "bad.csv")


def test_missing_csv_is_named(tmp_path):
    with pytest.raises(UserError, match="nope.csv: file not found"):
        readers.read_labeled_csv(tmp_path / "nope.csv")


def test_real_test_split_holdout(agnews_dir):
    labels, texts = readers.read_labeled_csv(agnews_dir / "test.csv")
    assert len(texts) == 7600 and np.bincount(labels).tolist() == [1900] * 4
    train_rows, held_out = data.stratified_holdout(labels, 1600, seed=42)
    again, _ = data.stratified_holdout(labels, 1600, seed=42)
    assert len(train_rows) == 6000 and len(held_out) == 1600 and np.array_equal(train_rows, again)
    assert not set(train_rows) & set(held_out)
    assert np.bincount(labels[held_out]).tolist() == [400] * 4


class _Files(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def local_server(tmp_path):
    """A real HTTP server on 127.0.0.1 serving tmp_path/served."""
    served = tmp_path / "served"
    served.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             lambda *a: _Files(*a, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_download_checks_md5_and_writes_atomically(tmp_path, local_server, monkeypatch):
    served, url = local_server
    labels, texts = generated.generate_rows(40, 0)
    for name in ("train.csv", "test.csv"):
        generated.write_labeled_csv(served / name, labels, texts)
    good = hashlib.md5((served / "train.csv").read_bytes()).hexdigest()
    cache = tmp_path / "cache"
    monkeypatch.setattr(download, "AGNEWS_URLS", {"train.csv": (f"{url}/train.csv", good),
                                              "test.csv": (f"{url}/test.csv", "0" * 32)})
    with pytest.raises(UserError, match="wrong MD5"):
        download.download_agnews(str(cache))
    assert sorted(os.listdir(cache)) == ["train.csv"]  # the bad file left nothing behind
    assert (cache / "train.csv").read_bytes() == (served / "train.csv").read_bytes()


def test_download_without_network_says_how_to_pass_data_dir(tmp_path, monkeypatch):
    # Port 9 on loopback is closed: the same failure as an offline machine, at once.
    monkeypatch.setattr(download, "AGNEWS_URLS", {"train.csv": ("http://127.0.0.1:9/train.csv", "0" * 32)})
    with pytest.raises(UserError, match="--data-dir"):
        download.download_agnews(str(tmp_path))
    assert os.listdir(tmp_path) == []
