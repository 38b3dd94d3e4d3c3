"""The cheap baselines distjob is measured against, fit on the same texts in distjob's tokens:
scikit-learn's TF-IDF + LinearSVC, and fastText's supervised classifier with word bigrams,
without and with GloVe as its initial embedding. The bench (section 7) and compare print them.
fastText is optional (the `peers` extra): where `import fasttext` fails, its rows are skipped.
"""
import importlib
import os
import tempfile
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .text import TOKEN_RE, tokenize

TOKENS = f"distjob's tokens (lowercase, {TOKEN_RE.pattern})"
# Word bigrams, the settings fastText's paper reports on AG News (Joulin et al., 2016), its
# vectors GloVe's width (dim), so the same settings take GloVe as their start. One thread: a fit
# repeats exactly.
FASTTEXT = dict(wordNgrams=2, epoch=25, lr=0.5, thread=1, seed=0, verbose=0)
NOT_INSTALLED = {"fasttext": "fastText rows skipped: `import fasttext` failed (install the peers extra: "
                             "pip install -e '.[peers]', or .venv/bin/pip install fasttext-wheel==0.9.2)"}


def fit_tfidf_linearsvc(train_texts, train_labels, test_texts, glove):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_pipeline
    from sklearn.svm import LinearSVC

    model = make_pipeline(TfidfVectorizer(token_pattern=TOKEN_RE.pattern), LinearSVC())
    started = time.perf_counter()
    model.fit(train_texts, train_labels)
    return time.perf_counter() - started, model.predict(test_texts)


def write_vec(path, glove, texts):
    """GloVe's vectors of the words these texts hold, in fastText's .vec text format (a `count
    width` line, then `word v1 ... vD` lines) -> how many. fastText adds every word of the file to
    its dictionary, so these are all of GloVe it can use on these texts (test words included)."""
    tokens, vectors = pa.array(glove[0], pa.string()), glove[1]
    words = pa.array(sorted({token for text in texts for token in tokenize(text)}), pa.string())
    rows = np.flatnonzero(pc.is_in(tokens, value_set=words).to_numpy(zero_copy_only=False))
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"{len(rows)} {vectors.shape[1]}\n")
        for word, vector in zip(tokens.take(pa.array(rows)).to_pylist(), vectors[rows]):
            f.write(word + " " + " ".join(f"{x:.6g}" for x in vector) + "\n")
    return len(rows)


def fit_fasttext(train_texts, train_labels, test_texts, glove, with_glove):
    """fastText on files of `__label__K tokens` lines; GloVe in a .vec file as its start."""
    import fasttext

    with tempfile.TemporaryDirectory(prefix="distjob-fasttext-") as folder:
        rows, extra = os.path.join(folder, "train.txt"), {}
        with open(rows, "w", encoding="utf-8") as f:
            for text, label in zip(train_texts, train_labels):
                f.write(f"__label__{label} {' '.join(tokenize(text))}\n")
        if with_glove:
            extra["pretrainedVectors"] = os.path.join(folder, "glove.vec")
            write_vec(extra["pretrainedVectors"], glove, [*train_texts, *test_texts])
        started = time.perf_counter()
        model = fasttext.train_supervised(rows, dim=glove[1].shape[1], **FASTTEXT, **extra)
        seconds = time.perf_counter() - started
    predicted, _ = model.predict([" ".join(tokenize(text)) for text in test_texts])
    return seconds, np.array([int(labels[0].removeprefix("__label__")) for labels in predicted])


@dataclass(frozen=True)
class Baseline:
    name: str      # as the tables print it
    library: str   # the module it needs
    settings: str  # what it is fit with, for the tables' notes
    fit: Callable  # (train texts, train labels, test texts, glove (tokens, vectors)) -> (fit seconds, predictions)


FASTTEXT_SETTINGS = ", ".join(f"{k} {v}" for k, v in FASTTEXT.items() if k != "verbose") + ", dim GloVe's width"
# The one table of baselines: the bench's rows and compare's read it (key: the bench's row key).
BASELINES = {
    "sklearn.tfidf_linearsvc": Baseline("scikit-learn TF-IDF + LinearSVC", "sklearn", "TfidfVectorizer + LinearSVC, "
                                        "their defaults", fit_tfidf_linearsvc),
    "fasttext.bigrams": Baseline("fastText, bigrams", "fasttext", FASTTEXT_SETTINGS,
                                 lambda *a: fit_fasttext(*a, with_glove=False)),
    "fasttext.bigrams_glove": Baseline("fastText, bigrams, GloVe as its initial embedding", "fasttext",
                                       f"{FASTTEXT_SETTINGS}; GloVe's vectors of these texts' words in a .vec file",
                                       lambda *a: fit_fasttext(*a, with_glove=True)),
}


def installed(say):
    """-> {key: baseline} of those whose library imports here; say(library, line) once for each
    library that does not, the line naming how to install it."""
    found, missing = {}, set()
    for key, baseline in BASELINES.items():
        try:
            importlib.import_module(baseline.library)
            found[key] = baseline
        except ImportError:
            if baseline.library not in missing:
                say(baseline.library, NOT_INSTALLED[baseline.library])
            missing.add(baseline.library)
    return found


def fit_and_score(baseline, train_texts, train_labels, test_texts, test_labels, glove):
    """-> (fit seconds, test accuracy)."""
    seconds, predicted = baseline.fit(list(train_texts), np.asarray(train_labels), list(test_texts), glove)
    return seconds, float((np.asarray(predicted) == np.asarray(test_labels)).mean())
