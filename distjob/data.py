"""Labeled text -> token ids: read CSV, tokenize, build the vocabulary, encode once.

The CSV layout is AG News's, shared by the char-CNN data sets (DBpedia, Yelp, Yahoo Answers,
Amazon): "class","text column",... with classes 1..K, and a classes.txt of their names
beside the CSVs. Small composable pieces; `load_splits` wires them into the training and
evaluation rows and their class names. Also: a deterministic generator of small data of
2..8 topics (test mode, tests) and the MD5-verified download of AG News.
"""
import collections
import csv
import hashlib
import io
import mmap
import os
import re
import urllib.request
from dataclasses import dataclass
from typing import Optional

import gluonnlp
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from .config import UserError
from .store import atomic_file, write_file

AGNEWS_CLASSES = ("World", "Sports", "Business", "Sci/Tech")  # AG News's classes.txt: labels 1..4
CLASSES_FILE = "classes.txt"  # class names, one a line, label 1 first: beside the training CSV
PAD, UNK = "<pad>", "<unk>"  # ids 0 and 1
TOKEN_RE = re.compile(r"\w+")
ARROW_MAX_COLUMNS = 64  # text columns pyarrow reads as text: a row of more goes to csv.reader

# The files torchtext's AG_NEWS downloads, with its MD5s.
AGNEWS_URLS = {
    "train.csv": ("https://raw.githubusercontent.com/mhjabreel/CharCnn_Keras/master/data/ag_news_csv/train.csv",
                  "b1a00f826fdfbd249f79597b59e1dc12"),
    "test.csv": ("https://raw.githubusercontent.com/mhjabreel/CharCnn_Keras/master/data/ag_news_csv/test.csv",
                 "d52ea96a97a2d943681189a97654912d"),
}


def read_text(path):
    """A text file's contents: UTF-8, with or without a byte-order mark (what spreadsheet
    tools write). A missing file, a NUL byte or other bytes are one error naming file:line."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read it ({e.strerror})") from None
    nul = raw.find(b"\0")
    if nul >= 0:
        raise UserError(f"{path}:{line_of(raw, nul)}: a NUL byte: not a text file")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}:{line_of(raw, e.start)}: not UTF-8 ({e.reason} at byte "
                        f"{raw[e.start]:#04x}); save the file as UTF-8") from None


def read_agnews_csv(path, num_classes=None, classes_from=""):
    """-> (labels int32 array of 0..K-1, texts). Each row is a class 1..K and one or more text
    columns, joined with a space: "class","title","description" (AG News, DBpedia, Amazon),
    "class","text" (Yelp), "class","question","details","answer" (Yahoo Answers).
    num_classes: K when it is known (classes.txt, the training file, a checkpoint), said by
    classes_from; a label above it is an error, as is any label below 1."""
    labels, texts = [], []
    reader = csv.reader(io.StringIO(read_text(path), newline=""))
    try:
        for row in reader:
            where = f"{path}:{reader.line_num}"
            if len(row) < 2:
                raise UserError(f"{where}: expected a class and 1 or more text columns, got {len(row)} column(s)")
            label = row[0].strip()
            if not (label.isascii() and label.isdigit() and int(label) >= 1):
                raise UserError(f"{where}: class must be a whole number from 1, got {row[0]!r}")
            if num_classes and int(label) > num_classes:
                raise UserError(f"{where}: class must be 1..{num_classes} ({classes_from}), got {row[0]!r}")
            labels.append(int(label) - 1)
            texts.append(" ".join(row[1:]))
    except csv.Error as e:
        raise UserError(f"{path}:{reader.line_num}: not a readable CSV row: {e}") from None
    if not texts:
        raise UserError(f"{path}: file is empty, expected rows of a class and its text")
    return np.array(labels, dtype=np.int32), texts


def read_agnews_arrow(path, num_classes=None, classes_from=""):
    """read_agnews_csv's rows, read by pyarrow's CSV reader (C++, no python object per row):
    -> (labels, texts as a pyarrow string array). A file that is not clean rows of a class and
    text columns (or that pyarrow reads otherwise) goes to read_agnews_csv, which names the
    first bad line, or reads what it reads."""
    try:
        table = pacsv.read_csv(path, read_options=pacsv.ReadOptions(autogenerate_column_names=True),
                               parse_options=pacsv.ParseOptions(newlines_in_values=True, ignore_empty_lines=False),
                               convert_options=pacsv.ConvertOptions(
                                   column_types={f"f{i}": pa.string() for i in range(ARROW_MAX_COLUMNS)}))
        columns = [column.combine_chunks() for column in table.columns]
        del table
        label_text = pc.ascii_trim_whitespace(columns[0])
        clean = (2 <= len(columns) <= ARROW_MAX_COLUMNS and len(label_text) > 0
                 and pc.all(pc.match_substring_regex(label_text, "^[0-9]{1,9}$")).as_py()
                 and not has_nul_byte(path))
        if clean:
            labels = pc.cast(label_text, pa.int32()).to_numpy()
            if labels.min() >= 1 and (not num_classes or labels.max() <= num_classes):
                texts = columns[1] if len(columns) == 2 else pc.binary_join_element_wise(*columns[1:], " ")
                return labels - 1, texts
    except (pa.ArrowException, OSError):
        pass
    labels, texts = read_agnews_csv(path, num_classes, classes_from)
    return labels, pa.array(texts, pa.string())


def has_nul_byte(path):
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as contents:
        return contents.find(b"\0") >= 0


def read_class_names(path):
    """classes.txt -> its names, one a line, label 1 first; None when there is no such file."""
    if not os.path.exists(path):
        return None
    lines = read_text(path).splitlines()
    while lines and not lines[-1].strip():  # a file may end in blank lines
        lines.pop()
    names = []
    for number, line in enumerate(lines, 1):
        name = line.strip()
        if not name:
            raise UserError(f"{path}:{number}: an empty class name (one name a line, class 1 first)")
        if name in names:
            raise UserError(f"{path}:{number}: {name!r} is named twice (line {names.index(name) + 1})")
        names.append(name)
    return names


def numbered_class_names(num_classes):
    """The names of classes no classes.txt names: class 1 .. class K."""
    return [f"class {k}" for k in range(1, num_classes + 1)]


def classes_path(train_path):
    return os.path.join(os.path.dirname(train_path), CLASSES_FILE)


def line_of(raw, offset):
    """The 1-based line number of a byte offset in a file's bytes."""
    return raw.count(b"\n", 0, offset) + 1


def input_files(cfg):
    """The files a config reads: none in test mode; the training file, the test file unless
    the evaluation rows are held out from the training file, and classes.txt if it is there
    (so a run's identity covers its class names)."""
    if cfg.test_mode:
        return []
    data_dir = cfg.data_dir or cfg.cache_dir
    names = [cfg.train_file] if cfg.holdout_from_train else [cfg.train_file, cfg.test_file]
    paths = [os.path.join(data_dir, name) for name in names]
    return paths + [path for path in [classes_path(paths[0])] if os.path.exists(path)]


def check_inputs(cfg):
    """Before any work: the data dir exists (or AG News is downloaded into the cache dir), and
    every file the config reads can be opened."""
    if cfg.test_mode:
        return
    if cfg.data_dir is None:
        download_agnews(cfg.cache_dir)
    elif not os.path.isdir(cfg.data_dir):
        raise UserError(f"--data-dir {cfg.data_dir}: no such directory")
    for path in input_files(cfg):
        try:
            open(path, "rb").close()
        except FileNotFoundError:
            raise UserError(f"{path}: file not found") from None
        except OSError as e:
            raise UserError(f"{path}: cannot read it ({e.strerror})") from None


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


def encode(tokens, vocab, max_tokens):
    """Tokens -> one int32 (N, max_tokens) array, clipped, padded with 0: each distinct word
    looked up once (pyarrow's hash tables), once per run, never per batch."""
    words = pc.dictionary_encode(tokens.flat)
    return layout(ids_of(words.dictionary, vocab)[words.indices.to_numpy()], tokens.offsets, max_tokens, fill=0)


# ---- generated data: 2..8 topics of real English words, deterministic from a seed --------
TOPICS = {  # name -> its words (GloVe has a vector for each); test mode's K topics are the first K
    "World": "government minister president election war troops police country military embassy "
             "parliament rebels nuclear peace talks leader killed iraq united nations border".split(),
    "Sports": "game team season coach player league championship match score win cup olympic "
              "tournament football baseball basketball victory defeat goal tennis".split(),
    "Business": "company shares market profit stocks sales investors quarter economy prices bank "
                "oil earnings billion percent deal growth trade dollar retail".split(),
    "Sci/Tech": "software internet computer technology users microsoft online web wireless search "
                "space research science data network phone apple google chip digital".split(),
    "Health": "health hospital doctors patients disease medical drug cancer vaccine treatment "
              "heart surgery nurses clinic infection diabetes flu medicine symptoms therapy".split(),
    "Entertainment": "film movie actor actress music album singer band concert hollywood television "
                     "festival award oscar theater comedy celebrity director songs premiere".split(),
    "Weather": "weather storm hurricane rain snow forecast temperatures wind flooding tornado "
               "winter heat clouds degrees drought thunderstorms cold sunny humid frost".split(),
    "Travel": "travel airline flights hotel tourists airport vacation passengers cruise beach "
              "resort trip tourism luggage destination holiday visitors journey booking ticket".split(),
}
_COMMON_WORDS = ("the a of to and in on for with said new after is that by at from as "
                 "it was his has have will more its an year first two week monday people").split()


def generate_agnews(n_rows, seed, num_classes=4):
    """-> (labels, texts): n_rows balanced rows of the first num_classes TOPICS; each text mixes
    topic and common words, with some words from other topics so the task is not trivial."""
    topic_words = list(TOPICS.values())[:num_classes]
    rng = np.random.default_rng(seed)
    labels = np.arange(n_rows, dtype=np.int32) % num_classes
    rng.shuffle(labels)
    texts = []
    for label in labels:
        length = rng.integers(12, 45)
        words = []
        for _ in range(length):
            r = rng.random()
            topic = label if r < 0.25 else rng.integers(num_classes) if r < 0.35 else None
            pool = _COMMON_WORDS if topic is None else topic_words[int(topic)]
            words.append(pool[rng.integers(len(pool))])
        texts.append(" ".join(words).capitalize() + ".")
    return labels, texts


def write_agnews_csv(path, labels, texts):
    """Write rows in the AG News layout: "class","title","description" (class 1..K)."""
    with atomic_file(path, "w") as f:
        writer = csv.writer(f, quoting=csv.QUOTE_ALL)
        for label, text in zip(labels, texts):
            title, _, description = text.partition(" ")
            writer.writerow([int(label) + 1, title, description])


def write_class_names(path, names):
    """Write classes.txt: one name a line, label 1 first (atomic: a reader sees all or none)."""
    write_file(path, "".join(name + "\n" for name in names))


# ---- the real files ------------------------------------------------------------------
def download_agnews(cache_dir, timeout=30):
    """Fetch train.csv and test.csv into cache_dir (MD5-checked, atomic), if not there yet,
    and write AG News's classes.txt beside them (its archive ships one; the names are fixed)."""
    for name, (url, md5) in AGNEWS_URLS.items():
        path = os.path.join(cache_dir, name)
        if os.path.exists(path):
            continue
        try:
            os.makedirs(cache_dir, exist_ok=True)
            with atomic_file(path) as out, urllib.request.urlopen(url, timeout=timeout) as response:
                digest = hashlib.md5()
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    out.write(chunk)
                    digest.update(chunk)
                if digest.hexdigest() != md5:  # raised inside: the file is never named path
                    raise UserError(f"{url}: downloaded file has the wrong MD5 (expected {md5})")
        except OSError as e:  # URLError, timeouts, DNS failures: no network
            raise UserError(f"AG News is not in {cache_dir} and could not be downloaded ({e}). "
                            "Pass --data-dir DIR with train.csv and test.csv (torchtext's "
                            "AG_NEWS layout) to train offline.") from None
    if not os.path.exists(os.path.join(cache_dir, CLASSES_FILE)):
        write_class_names(os.path.join(cache_dir, CLASSES_FILE), AGNEWS_CLASSES)


def stratified_holdout(labels, n_holdout, seed, flag="holdout_from_train"):
    """-> (train_rows, holdout_rows) index arrays: n_holdout rows, classes in proportion."""
    from sklearn.model_selection import train_test_split
    if not 0 < n_holdout < len(labels):
        raise UserError(f"{flag}: {n_holdout} rows must be between 1 and {len(labels) - 1} "
                        "(the training rows left)")
    try:
        return train_test_split(np.arange(len(labels)), test_size=n_holdout, stratify=labels,
                                random_state=seed)
    except ValueError as e:  # too few rows of some class to split it in proportion
        raise UserError(f"{flag}: cannot hold out {n_holdout} of {len(labels)} rows with every class "
                        f"in proportion ({e}); hold out more rows, or none") from None


def read_training_csv(path, reader=read_agnews_csv):
    """-> (labels, texts, class names, where K came from): K and the names from classes.txt
    beside the file when it is there, else K is the file's highest class and the names are
    class 1..K. reader: read_agnews_csv (texts as a list) or read_agnews_arrow."""
    names_path = classes_path(path)
    names = read_class_names(names_path)
    if names is not None:
        if len(names) < 2:
            raise UserError(f"{names_path}: names {len(names)} class; a classifier needs 2 or more")
        classes_from = f"{names_path} names {len(names)}"
        labels, texts = reader(path, len(names), classes_from)
    else:
        labels, texts = reader(path)
        names = numbered_class_names(int(labels.max()) + 1)
        if len(names) < 2:
            raise UserError(f"{path}: every row is class 1; a classifier needs 2 or more classes")
        classes_from = f"the highest class in {path}; a {CLASSES_FILE} beside it can name more"
    return labels, texts, names, classes_from


@dataclass
class Splits:
    """A run's rows as labels (0..K-1) and raw texts: it trains on train, chooses its best
    epoch and stops early on validation (None: no validation set), and reports test."""
    train_labels: np.ndarray
    train_texts: list  # or a pyarrow string array, or Rows of one
    val_labels: Optional[np.ndarray]
    val_texts: Optional[list]
    test_labels: np.ndarray
    test_texts: list
    source: str  # where they came from, for the log
    classes: list  # the K class names, label 0 first


def take(texts, rows):
    """These rows of texts (a list or a pyarrow array), in this order."""
    return texts.take(pa.array(rows)) if isinstance(texts, pa.Array) else [texts[i] for i in rows]


class Rows:
    """These rows of texts (a list, a pyarrow string array, or Rows), in this order, not
    copied: a slice of them is taken when it is read, so a split costs no second copy of its texts."""

    def __init__(self, texts, rows):
        if isinstance(texts, Rows):
            texts, rows = texts.texts, texts.rows[rows]
        self.texts = texts if isinstance(texts, pa.Array) else pa.array(texts, pa.string())
        self.rows = np.asarray(rows)

    def __len__(self):
        return len(self.rows)

    def slice(self, start, length):
        return self.texts.take(pa.array(self.rows[start:start + length]))


def load_splits(cfg, reader=read_agnews_csv, take=take):
    """The config's rows and class names: test mode's generated data, or the files in data_dir,
    tested on test_file or on rows held out from train_file; validation comes out of the rest.
    reader: read_agnews_csv (texts as lists) or read_agnews_arrow (as pyarrow arrays); take:
    how a split's texts are taken from the file's (Rows: not copied)."""
    if cfg.test_mode:
        labels, texts = generate_agnews(4000, cfg.seed, cfg.test_classes)
        classes = list(TOPICS)[:cfg.test_classes]
        source = f"generated data of {cfg.test_classes} topics (test mode)"
        n_holdout = cfg.holdout_from_train or 800
    else:
        data_dir = cfg.data_dir or cfg.cache_dir
        source = os.path.join(data_dir, cfg.train_file)
        labels, texts, classes, classes_from = read_training_csv(source, reader)
        n_holdout = cfg.holdout_from_train
    if n_holdout:
        train_rows, test_rows = stratified_holdout(labels, n_holdout, cfg.seed, "holdout_from_train")
        test_labels, test_texts = labels[test_rows], take(texts, test_rows)
        labels, texts = labels[train_rows], take(texts, train_rows)
        source += f", {n_holdout} rows held out for testing"
    else:
        test_labels, test_texts = reader(os.path.join(data_dir, cfg.test_file), len(classes), classes_from)
        source += f", tested on {cfg.test_file}"
    if not cfg.validation_size:
        return Splits(labels, texts, None, None, test_labels, test_texts, f"{source}, {described(classes)}", classes)
    n_val = validation_rows(cfg.validation_size, len(labels))
    train_rows, val_rows = stratified_holdout(labels, n_val, cfg.seed, "validation_size")
    return Splits(labels[train_rows], take(texts, train_rows), labels[val_rows],
                  take(texts, val_rows), test_labels, test_texts,
                  f"{source}, {n_val} training rows held out for validation, {described(classes)}", classes)


def validation_rows(size, n_rows):
    """--validation-size as a number of rows: a fraction below 1, else rows."""
    return max(1, round(size * n_rows)) if size < 1 else int(size)


def described(classes):
    return f"{len(classes)} classes ({', '.join(classes)})"
