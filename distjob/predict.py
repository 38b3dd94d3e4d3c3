"""Classify lines of text with a saved checkpoint: one `class<TAB>probability<TAB>text` per line.

    echo "Stocks fell as oil prices rose" | python -m distjob.predict runs/agnews
    python -m distjob.predict runs/agnews headlines.txt --exported   # the model.export graph
"""
import argparse
import sys

import mxnet as mx

from . import checkpoint
from .config import UserError, run_main
from .scoring import text_probs
from .text import decode_utf8

TEXT_START = 60  # characters of each text echoed back


def read_lines(path):
    """Non-blank lines of a file, or of stdin when path is None or '-'. Bytes that are not
    UTF-8 become U+FFFD, and one line on stderr names the first line that held some."""
    from_stdin = path in (None, "-")
    name = "stdin" if from_stdin else path
    try:
        if from_stdin:
            raw = sys.stdin.buffer.read()
        else:
            with open(path, "rb") as f:
                raw = f.read()
    except OSError as e:
        raise UserError(f"{path}: cannot read text lines ({e.strerror or e})") from None
    lines = decoded_lines(raw.removeprefix(b"\xef\xbb\xbf"), name)  # a byte-order mark is not text
    lines = [line for line in lines if line.strip()]
    if not lines:
        raise UserError(f"{name}: no text to classify (expected one text per line)")
    return lines


def decoded_lines(raw, name):
    """raw's lines as text; those not UTF-8 with U+FFFD for the bytes that are not, said once."""
    lines, not_utf8 = [], []
    for number, line in enumerate(raw.splitlines(), 1):
        text, replaced = decode_utf8(line)
        lines.append(text)
        if replaced:
            not_utf8.append(number)
    if not_utf8:
        more = f" and {len(not_utf8) - 1} more line(s)" if len(not_utf8) > 1 else ""
        print(f"distjob: {name}:{not_utf8[0]}{more}: not UTF-8; the bytes that are not were replaced "
              "with U+FFFD", file=sys.stderr, flush=True)
    return lines


def predict(args):
    ctx = mx.cpu()
    texts = read_lines(args.file)
    model, vocab, config, classes = checkpoint.load_model(args.checkpoint, ctx, exported=args.exported)
    probs = text_probs(model, vocab, config["max_tokens"], texts, ctx)
    for text, row in zip(texts, probs):
        best = row.argmax()
        start = " ".join(text.split())[:TEXT_START]  # tabs and runs of spaces -> one space
        print(f"{classes[best]}\t{row[best]:.4f}\t{start}")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m distjob.predict", description=
                                     "Print the predicted class and its probability "
                                     "for each non-blank line of text.")
    parser.add_argument("checkpoint", metavar="CHECKPOINT",
                        help="a training output dir (its best checkpoint is used) or a checkpoint dir")
    parser.add_argument("file", metavar="FILE", nargs="?", help="text file, one text per line "
                        "(default: stdin)")
    parser.add_argument("--exported", action="store_true",
                        help="load the exported graph (model-symbol.json, model-0000.params) "
                        "instead of rebuilding the model from model.params")
    run_main(predict, parser.parse_args(argv))


if __name__ == "__main__":
    main()
