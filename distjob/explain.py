"""Why did the model pick that class? Word weights from LIME, printed and saved as HTML.

    python -m distjob.explain runs/agnews "Stocks fell as oil prices rose"
    python -m distjob.explain runs/agnews --index 12 --data-dir DIR   # row 12 of the test set
"""
import argparse
import os
import sys

import mxnet as mx
from lime.lime_text import LimeTextExplainer

from . import checkpoint
from .config import UserError, run_main
from .evaluate import add_eval_set_args, eval_set
from .scoring import text_probs
from .text import decode_utf8, tokenize


def text_argument(text):
    """TEXT as given: bytes that are not UTF-8 (python keeps them as surrogates) become U+FFFD, said once."""
    decoded, replaced = decode_utf8(os.fsencode(text))
    if replaced:
        print("distjob: TEXT: not UTF-8; the bytes that are not were replaced with U+FFFD", file=sys.stderr,
              flush=True)
    return decoded


def pick_text(args, config, classes):
    """-> (text, true class index or None): the TEXT argument or row --index of the eval set."""
    if (args.text is None) == (args.index is None):
        raise UserError("give either a TEXT or --index N (a row of the evaluation set)")
    if args.text is not None:
        args.text = text_argument(args.text)
        if not tokenize(args.text):
            raise UserError("TEXT: no words to classify")
        return args.text, None
    labels, texts, source = eval_set(config, classes, args)
    if not 0 <= args.index < len(texts):
        raise UserError(f"--index {args.index}: the evaluation set has rows 0..{len(texts) - 1} "
                        f"({source})")
    return texts[args.index], int(labels[args.index])


def explain(args):
    if args.num_samples < 1 or args.num_features < 1:
        raise UserError("--num-samples and --num-features must be >= 1")
    ctx = mx.cpu()
    checkpoint_dir = checkpoint.resolve(args.checkpoint)
    model, vocab, config, classes = checkpoint.load_model(checkpoint_dir, ctx)
    text, true_class = pick_text(args, config, classes)

    def classifier_fn(texts):  # LIME's perturbed texts, all at once: predict_probs batches them
        return text_probs(model, vocab, config["max_tokens"], texts, ctx)

    probs = classifier_fn([text])[0]
    predicted = int(probs.argmax())
    print(f"text: {text}")
    width = max(map(len, classes))
    for i, name in enumerate(classes):
        print(f"  {name:<{width}} {probs[i]:.4f}" + ("  <- predicted" if i == predicted else ""))
    if true_class is not None:
        print(f"true class: {classes[true_class]}")

    explainer = LimeTextExplainer(class_names=classes, random_state=config["seed"])
    explanation = explainer.explain_instance(text, classifier_fn, labels=(predicted,),
                                             num_features=args.num_features, num_samples=args.num_samples)
    print(f"\nwords for (+) and against (-) {classes[predicted]}, LIME on {args.num_samples} samples:")
    for word, weight in explanation.as_list(label=predicted):
        print(f"  {weight:+.4f}  {word}")

    name = "explanation.html" if args.index is None else f"explanation-{args.index}.html"
    path = args.output or os.path.join(checkpoint.run_dir(checkpoint_dir), "eval", name)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    explanation.save_to_file(path)
    print(f"wrote {path}")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m distjob.explain", description=
                                     "Explain one prediction with LIME: which words pushed the "
                                     "model to its class.")
    add_eval_set_args(parser)
    parser.add_argument("text", metavar="TEXT", nargs="?", help="the text to explain")
    parser.add_argument("--index", type=int, metavar="N",
                        help="explain row N of the evaluation set instead (see --data-dir, --test-mode)")
    parser.add_argument("--num-samples", type=int, default=500, metavar="N",
                        help="perturbed texts LIME classifies: more is steadier and slower (default: 500)")
    parser.add_argument("--num-features", type=int, default=10, metavar="N",
                        help="words to report (default: 10)")
    parser.add_argument("--output", metavar="FILE.html",
                        help="where the HTML goes (default: RUN/eval/explanation[-N].html)")
    run_main(explain, parser.parse_args(argv))


if __name__ == "__main__":
    main()
