"""Reading a data set's files: CSVs in AG News's layout and the classes.txt beside them.

The layout is shared by the char-CNN data sets (DBpedia, Yelp, Yahoo Answers, Amazon):
"class","text column",... with classes 1..K, and a classes.txt of their names beside the
CSVs (docs/datasets.md). A file that cannot be read is one UserError naming file:line.
"""
import csv
import io
import mmap
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from .config import UserError

CLASSES_FILE = "classes.txt"  # class names, one a line, label 1 first: beside the training CSV
ARROW_MAX_COLUMNS = 64  # text columns pyarrow reads as text: a row of more goes to csv.reader


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


def read_labeled_csv(path, num_classes=None, classes_from=""):
    """-> (labels int32 array of 0..K-1, texts). Each row is a class 1..K and one or more text
    columns, joined with a space: "class","title","description" (AG News, DBpedia, Amazon),
    "class","text" (Yelp), "class","question","details","answer" (Yahoo Answers).
    num_classes: K when it is known (classes.txt, the training file, a checkpoint), said by
    classes_from; a label above it is an error, as is any label below 1."""
    labels, texts = [], []
    text = read_text(path)
    # The whole file is in memory already: csv's field limit (128 KiB) would only refuse long texts.
    csv.field_size_limit(max(csv.field_size_limit(), len(text) + 1))
    reader = csv.reader(io.StringIO(text, newline=""))
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


def read_labeled_arrow(path, num_classes=None, classes_from=""):
    """read_labeled_csv's rows, read by pyarrow's CSV reader (C++, no python object per row):
    -> (labels, texts as a pyarrow string array). A file that is not clean rows of a class and
    text columns (or that pyarrow reads otherwise) goes to read_labeled_csv, which names the
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
    labels, texts = read_labeled_csv(path, num_classes, classes_from)
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
    from .download import download_agnews  # download.py reads this module's CLASSES_FILE
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


def read_training_csv(path, reader=read_labeled_csv):
    """-> (labels, texts, class names, where K came from): K and the names from classes.txt
    beside the file when it is there, else K is the file's highest class and the names are
    class 1..K. reader: read_labeled_csv (texts as a list) or read_labeled_arrow."""
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
