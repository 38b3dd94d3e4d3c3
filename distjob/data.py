"""A run's rows: its training, validation and test labels and texts, and its class names.

`load_splits` reads them (readers.py) or generates them (test mode, generated.py), holds out
the test rows from the training file where the config says, and the validation rows from
what is left, every class in proportion.
"""
import os
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pyarrow as pa

from .config import UserError
from .generated import TOPICS, generate_rows
from .readers import read_labeled_csv, read_training_csv


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


def load_splits(cfg, reader=read_labeled_csv, take=take):
    """The config's rows and class names: test mode's generated data, or the files in data_dir,
    tested on test_file or on rows held out from train_file; validation comes out of the rest.
    reader: read_labeled_csv (texts as lists) or read_labeled_arrow (as pyarrow arrays); take:
    how a split's texts are taken from the file's (Rows: not copied)."""
    if cfg.test_mode:
        labels, texts = generate_rows(4000, cfg.seed, cfg.test_classes)
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
