"""Rank 0's evaluation: loss and accuracy each epoch, and the final report files.

Also a command that evaluates a saved checkpoint:

    python -m distjob.evaluate runs/agnews --data-dir DIR    # its best checkpoint on DIR/test.csv
    python -m distjob.evaluate runs/test-mode --test-mode     # on the regenerated test-mode split
"""
import argparse
import json
import os
import sys

import mxnet as mx
import numpy as np
from mxnet import gluon

from . import checkpoint, data
from .config import FIELDS, Config, UserError, exit_on_user_error
from .data import CLASSES
from .model import PREDICT_BATCH_SIZE


class BatchTotals(gluon.HybridBlock):
    """A training batch's summed loss and its number of correct predictions, as one (2,) array.
    Hybridized, it is one operator call per step for the python thread, where the two sums
    were four (sum, argmax, ==, sum)."""

    def hybrid_forward(self, F, loss, logits, labels):
        return F.concat(loss.sum(), (logits.argmax(axis=1) == labels).sum(), dim=0)


def predict_probs(model, ids, ctx, batch_size=PREDICT_BATCH_SIZE):
    """(N, max_tokens) int32 ids -> (N, 4) class probabilities, as numpy."""
    probs = []
    for start in range(0, len(ids), batch_size):
        batch = mx.nd.array(ids[start:start + batch_size], ctx=ctx, dtype="int32")
        probs.append(mx.nd.softmax(model(batch)))
    return np.concatenate([p.asnumpy() for p in probs]) if probs else np.zeros((0, len(CLASSES)), np.float32)


def text_probs(model, vocab, max_tokens, texts, ctx):
    """Raw texts -> (N, 4) class probabilities: tokenized and encoded as in training."""
    ids = data.encode([data.tokenize(text) for text in texts], vocab, max_tokens)
    return predict_probs(model, ids, ctx)


def loss_and_accuracy(probs, labels):
    """Mean cross-entropy and accuracy from predicted probabilities."""
    picked = probs[np.arange(len(labels)), labels]
    return float(-np.log(np.maximum(picked, 1e-12)).mean()), float((probs.argmax(1) == labels).mean())


def write_report(output_dir, labels, predictions):
    """classification_report.txt, confusion_matrix.txt and confusion_matrix.png (row-normalized)."""
    from sklearn.metrics import classification_report, confusion_matrix
    report = classification_report(labels, predictions, labels=range(len(CLASSES)),
                                   target_names=CLASSES, digits=4, zero_division=0)
    counts = confusion_matrix(labels, predictions, labels=range(len(CLASSES)))
    paths = {name: os.path.join(output_dir, name) for name in
             ("classification_report.txt", "confusion_matrix.txt", "confusion_matrix.png")}
    with open(paths["classification_report.txt"], "w") as f:
        f.write(report)
    with open(paths["confusion_matrix.txt"], "w") as f:
        width = max(map(len, CLASSES)) + 2
        f.write("rows: true class, columns: predicted class\n")
        f.write(" " * width + "".join(c.rjust(width) for c in CLASSES) + "\n")
        for name, row in zip(CLASSES, counts):
            f.write(name.ljust(width) + "".join(str(n).rjust(width) for n in row) + "\n")
    plot_confusion_matrix(counts, paths["confusion_matrix.png"])
    return report, paths


def plot_confusion_matrix(counts, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    normalized = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    image = ax.imshow(normalized, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax)
    ax.set(xticks=range(len(CLASSES)), yticks=range(len(CLASSES)), xticklabels=CLASSES,
           yticklabels=CLASSES, xlabel="Predicted label", ylabel="True label",
           title="Normalized confusion matrix")
    for i in range(len(CLASSES)):
        for j in range(len(CLASSES)):
            ax.text(j, i, f"{normalized[i, j]:.2f}", ha="center", va="center",
                    color="white" if normalized[i, j] > 0.5 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def append_jsonl(path, record):
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def plot_learning_curves(records, path):
    """Train and eval loss and accuracy per epoch, from metrics.jsonl records."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator
    by_epoch = {r["epoch"]: r for r in records}  # a resumed run may repeat an epoch: keep the last
    epochs = sorted(by_epoch)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for split in ("train", "eval"):
            ax.plot(epochs, [by_epoch[e].get(f"{split}_{metric}") for e in epochs], "o-", label=split)
        ax.set(xlabel="epoch", ylabel=metric, title=metric.capitalize())
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---- python -m distjob.evaluate ---------------------------------------------------------
def add_eval_set_args(parser):
    """Which texts to evaluate on: shared with distjob.explain's --index."""
    parser.add_argument("checkpoint", metavar="CHECKPOINT",
                        help="a training output dir (its best checkpoint is used) or a checkpoint dir")
    parser.add_argument("--data-dir", metavar="DIR",
                        help="directory of AG News CSVs (default: the one the checkpoint trained on)")
    parser.add_argument("--test-file", metavar="NAME",
                        help="CSV in DIR to evaluate on, all rows (default: the split the training "
                        "run evaluated on, e.g. test.csv or its held-out rows of the training file)")
    parser.add_argument("--test-mode", action="store_true",
                        help="the generated test-mode evaluation split, regenerated as train does")


def eval_set(saved_config, args):
    """-> (labels, texts, description) of the texts that args select for a checkpoint."""
    values = {k: v for k, v in saved_config.items() if k in FIELDS}
    if args.data_dir:
        values.update(data_dir=args.data_dir, test_mode=False)
    if args.test_mode:
        values.update(test_mode=True)
    cfg = Config(**values).validate()
    if args.test_file is None and (cfg.test_mode or cfg.holdout_from_train):
        # The rows the training run held out: rebuilt exactly as train does (same seed).
        _, _, labels, texts, source = data.load_texts(cfg)
        return labels, texts, source
    if cfg.test_mode:
        raise UserError("--test-file: give --data-dir too (this is test mode, whose data is generated)")
    path = os.path.join(cfg.data_dir or cfg.cache_dir, args.test_file or cfg.test_file)
    return *data.read_agnews_csv(path), path


def evaluate_checkpoint(args):
    ctx = mx.cpu()  # thousands of rows: a CPU is plenty, and GPU-trained checkpoints load here too
    checkpoint_dir = checkpoint.resolve(args.checkpoint)
    model, vocab, config = checkpoint.load_model(checkpoint_dir, ctx)
    labels, texts, source = eval_set(config, args)
    probs = text_probs(model, vocab, config["max_tokens"], texts, ctx)
    loss, accuracy = loss_and_accuracy(probs, labels)

    run_dir = checkpoint.run_dir(checkpoint_dir)
    output_dir = args.output_dir or os.path.join(run_dir, "eval")
    os.makedirs(output_dir, exist_ok=True)
    report, paths = write_report(output_dir, labels, probs.argmax(1))
    metrics_path = os.path.join(run_dir, "metrics.jsonl")
    if os.path.exists(metrics_path):
        paths["learning_curves.png"] = os.path.join(output_dir, "learning_curves.png")
        plot_learning_curves(read_jsonl(metrics_path), paths["learning_curves.png"])
    else:
        print(f"note: no {metrics_path}, so no learning curves", file=sys.stderr)

    print(f"checkpoint {checkpoint_dir}\nevaluated on {len(labels)} rows: {source}")
    print(f"accuracy {accuracy:.4f}  loss {loss:.4f}\n\n{report}")
    print(f"wrote to {output_dir}:")
    for path in paths.values():
        print("  " + path)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m distjob.evaluate", description=
                                     "Evaluate a checkpoint: accuracy, classification report, "
                                     "confusion matrix and learning curves.")
    add_eval_set_args(parser)
    parser.add_argument("--output-dir", metavar="DIR",
                        help="where the report files go (default: RUN/eval beside the checkpoints)")
    exit_on_user_error(evaluate_checkpoint, parser.parse_args(argv))


if __name__ == "__main__":
    main()
