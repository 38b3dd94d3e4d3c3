"""Evaluate a saved checkpoint: accuracy, classification report, confusion matrix and
learning curves.

    python -m distjob.evaluate runs/agnews --data-dir DIR    # its best checkpoint on DIR/test.csv
    python -m distjob.evaluate runs/test-mode --test-mode     # on the regenerated test-mode split
"""
import argparse
import os
import sys

import mxnet as mx

from . import checkpoint
from .config import FIELDS, Config, UserError, run_main
from .data import described, load_splits
from .readers import read_labeled_csv
from .reports import plot_learning_curves, read_jsonl, write_report
from .scoring import loss_and_accuracy, text_probs


def add_eval_set_args(parser):
    """Which texts to evaluate on: shared with distjob.explain's --index."""
    parser.add_argument("checkpoint", metavar="CHECKPOINT",
                        help="a training output dir (its best checkpoint is used) or a checkpoint dir")
    parser.add_argument("--data-dir", metavar="DIR",
                        help="directory of CSVs in the training data's layout (default: the one the "
                        "checkpoint trained on)")
    parser.add_argument("--test-file", metavar="NAME",
                        help="CSV in DIR to evaluate on, all rows (default: the split the training "
                        "run evaluated on, e.g. test.csv or its held-out rows of the training file)")
    parser.add_argument("--test-mode", action="store_true",
                        help="the generated test-mode evaluation split, regenerated as train does")


def eval_set(saved_config, classes, args):
    """-> (labels, texts, description) of the texts that args select for a checkpoint trained
    on these class names; their labels must be among its classes."""
    values = {k: v for k, v in saved_config.items() if k in FIELDS}
    if args.data_dir:
        values.update(data_dir=args.data_dir, test_mode=False)
    if args.test_mode:
        values.update(test_mode=True)
    cfg = Config(**values).validate()
    if args.test_file is None and (cfg.test_mode or cfg.holdout_from_train):
        # The test rows the training run held out: rebuilt exactly as train does (same seed).
        splits = load_splits(cfg)
        if splits.classes != classes:
            raise UserError(f"{splits.source}: not the classes of the checkpoint "
                            f"({described(classes)})")
        return splits.test_labels, splits.test_texts, splits.source
    if cfg.test_mode:
        raise UserError("--test-file: give --data-dir too (this is test mode, whose data is generated)")
    path = os.path.join(cfg.data_dir or cfg.cache_dir, args.test_file or cfg.test_file)
    return *read_labeled_csv(path, len(classes), f"the checkpoint's {described(classes)}"), path


def evaluate_checkpoint(args):
    ctx = mx.cpu()  # thousands of rows: a CPU is plenty, and GPU-trained checkpoints load here too
    checkpoint_dir = checkpoint.resolve(args.checkpoint)
    model, vocab, config, classes = checkpoint.load_model(checkpoint_dir, ctx)
    labels, texts, source = eval_set(config, classes, args)
    probs = text_probs(model, vocab, config["max_tokens"], texts, ctx)
    loss, accuracy = loss_and_accuracy(probs, labels)

    run_dir = checkpoint.run_dir(checkpoint_dir)
    output_dir = args.output_dir or os.path.join(run_dir, "eval")
    os.makedirs(output_dir, exist_ok=True)
    report, paths = write_report(output_dir, labels, probs.argmax(1), classes)
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
    run_main(evaluate_checkpoint, parser.parse_args(argv))


if __name__ == "__main__":
    main()
