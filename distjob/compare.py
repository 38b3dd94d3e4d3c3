"""Train the original tutorial's approaches one after another and tabulate them.

    python -m distjob.compare --data-dir DIR                      # flatten, mean, sum, attention
    python -m distjob.compare --data-dir DIR --embeddings glove.840B.300d glove.42B.300d
    python -m distjob.compare --test-mode --epochs 1               # seconds, generated data
    horovodrun -np 4 python -m distjob.compare --data-dir DIR

Any other flag is distjob.train's (--epochs, --holdout-from-train, --config ...) and applies
to every approach. Each trains into OUTPUT_DIR/<pooling>-<embedding>/, so a rerun continues
or reuses finished approaches. Beside them, the cheap baselines (cheap_baselines.py: TF-IDF +
LinearSVC, fastText where it is installed) fit on the same training rows and score the same
test rows. The table goes to OUTPUT_DIR/results.{md,csv}.
"""
import csv
import json
import os

from . import checkpoint, data
from .cheap_baselines import fit_and_score, installed
from .config import ArgumentParser, parse_config
from .distributed import errors_reach_every_rank, init_horovod, run_horovod_main
from .embeddings import STANFORD_SUFFIXES, load_glove
from .model import POOLINGS
from .reports import read_jsonl
from .store import atomic_file, write_file
from .train import train

APPROACHES = {  # pooling -> the tutorial's name for it
    "flatten": "token vectors flattened",
    "mean": "token vectors averaged",
    "sum": "token vectors summed",
    "attention": "attention-weighted average + mean (distjob's best)",
}


def parse_args(argv):
    parser = ArgumentParser(
        allow_abbrev=False,  # else train's --embedding / --pooling would read as --embeddings / --poolings
        prog="python -m distjob.compare", description="Train several poolings and GloVe sources "
        "with the same data and settings; print and save a table of their accuracies.",
        epilog="Every other flag goes to each training run: see python -m distjob.train --help.")
    parser.add_argument("--poolings", nargs="+", default=list(APPROACHES), choices=list(POOLINGS),
                        metavar="POOLING", help=f"poolings to train (default: {' '.join(APPROACHES)}; "
                        f"choices: {', '.join(POOLINGS)})")
    parser.add_argument("--embeddings", nargs="+", default=[], metavar="SOURCE",
                        help="more GloVe sources to train every pooling on, besides --embedding: "
                        "e.g. glove.840B.300d glove.42B.300d (from --embedding-root) or a .txt path")
    parser.add_argument("--output-dir", metavar="DIR",
                        help="default: runs/compare (runs/compare-test-mode with --test-mode)")
    return parser.parse_known_args(argv)


def run_name(pooling, embedding):
    name = os.path.basename(embedding)
    for suffix in (*STANFORD_SUFFIXES, ".npz"):
        name = name.removesuffix(suffix)
    return f"{pooling}-{name}"


def result_row(cfg):
    """One table row from what train() wrote: results.json, metrics.jsonl, the best checkpoint."""
    with open(os.path.join(cfg.output_dir, "results.json")) as f:
        results = json.load(f)
    # Sum of the epochs' training time, so a resumed or reused run still reports all of it.
    seconds = sum(r["seconds"] for r in read_jsonl(os.path.join(cfg.output_dir, "metrics.jsonl")))
    _, width = checkpoint.embedding_shape(results["best_checkpoint"])
    return {"approach": APPROACHES.get(cfg.pooling, cfg.pooling), "max tokens": cfg.max_tokens,
            "embedding": cfg.embedding, "width": width, "pooling": cfg.pooling,
            "best epoch": f"{results['best_epoch']} of {results['epochs']}",
            "validation accuracy": "-" if results["val_accuracy"] is None else f"{results['val_accuracy']:.4f}",
            "test accuracy": f"{results['test_accuracy']:.4f}", "train time (s)": f"{seconds:.1f}"}


def baseline_rows(cfg):
    """The cheap baselines' rows: fit on cfg's training rows (its validation rows left out, as
    distjob trains without them), scored on its test rows; one line each for a library not installed."""
    splits, glove, rows = data.load_splits(cfg), load_glove(cfg.embedding, cfg.embedding_root), []
    for baseline in installed(lambda library, line: print(line, flush=True)).values():
        print(f"\n=== baseline: {baseline.name}", flush=True)
        seconds, accuracy = fit_and_score(baseline, splits.train_texts, splits.train_labels, splits.test_texts,
                                          splits.test_labels, glove)
        vectors = baseline.library == "fasttext"  # fastText's vectors have GloVe's width
        rows.append({"approach": baseline.name, "max tokens": "-",
                     "embedding": cfg.embedding if "GloVe" in baseline.name else "-",
                     "width": glove[1].shape[1] if vectors else "-", "pooling": "-", "best epoch": "-",
                     "validation accuracy": "-", "test accuracy": f"{accuracy:.4f}",
                     "train time (s)": f"{seconds:.1f}"})
    return rows


def markdown_table(rows):
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    return "\n".join(lines + ["| " + " | ".join(str(v) for v in row.values()) + " |" for row in rows])


def write_table(output_dir, rows, split):
    paths = [os.path.join(output_dir, name) for name in ("results.md", "results.csv")]
    write_file(paths[0], f"{split}\n\n{markdown_table(rows)}\n")
    with atomic_file(paths[1], "w") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return paths


def compare(argv):
    is_root = init_horovod().rank == 0  # train() gets the same world: Horovod starts once
    with errors_reach_every_rank():  # bad flags fail here, before any training, in one line
        args, train_args = parse_args(argv)
        base = parse_config(train_args)
        output_dir = args.output_dir or ("runs/compare-test-mode" if base.test_mode else "runs/compare")
        configs = [parse_config(train_args + ["--pooling", pooling, "--embedding", embedding, "--output-dir",
                                              os.path.join(output_dir, run_name(pooling, embedding))])
                   for embedding in [base.embedding, *args.embeddings] for pooling in args.poolings]
    for i, cfg in enumerate(configs, 1):
        if is_root:
            print(f"\n=== approach {i}/{len(configs)}: {cfg.pooling} pooling on {cfg.embedding} "
                  f"-> {cfg.output_dir}", flush=True)
        train(cfg)
    if is_root:
        rows = [result_row(cfg) for cfg in configs] + baseline_rows(base)
        with open(os.path.join(configs[0].output_dir, "results.json")) as f:  # every approach's rows
            split = "Rows: " + json.load(f)["split"] + "; the best epoch is chosen on validation, never on test."
        paths = write_table(output_dir, rows, split)
        print(f"\n{split}\n\n{markdown_table(rows)}\n\nwrote " + ", ".join(paths))


def main(argv=None):
    run_horovod_main(compare, argv)


if __name__ == "__main__":
    main()
