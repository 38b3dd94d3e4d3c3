import re

import pytest

from distjob.config import Config, UserError, build_parser, parse_config
from conftest import run, train_cmd


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return str(path)


def test_yaml_then_cli_override_defaults(tmp_path):
    path = write(tmp_path, "epochs: 7\npooling: mean\nlr: 0.01\n")
    cfg = parse_config(["--config", path, "--epochs", "3"])
    assert (cfg.epochs, cfg.pooling, cfg.lr) == (3, "mean", 0.01)
    assert cfg.batch_size == Config.batch_size


def test_test_mode_preset_is_overridable():
    assert parse_config(["--test-mode", "--epochs", "9"]).epochs == 9
    assert parse_config(["--test-mode"]).epochs != Config.epochs


def test_unknown_yaml_key_is_named(tmp_path):
    path = write(tmp_path, "epochs: 2\nepoch_count: 3\n")
    with pytest.raises(UserError, match=r"c\.yaml: unknown config key\(s\) epoch_count"):
        parse_config(["--config", path])


@pytest.mark.parametrize("text, key", [("epochs: ten\n", "epochs"), ("lr: [1]\n", "lr"),
                                       ("pooling: median\n", "pooling"), ("batch_size: 0\n", "batch_size"),
                                       ("scale_lr: maybe\n", "scale_lr")])
def test_bad_yaml_value_is_named(tmp_path, text, key):
    with pytest.raises(UserError, match=key):
        parse_config(["--config", write(tmp_path, text)])


def test_bad_cli_value_is_named():
    with pytest.raises(UserError, match="--epochs"):
        parse_config(["--epochs", "1.5"])


def test_help_explains_every_field():
    help_text = build_parser("x").format_help()
    for name in Config.__dataclass_fields__:
        assert "--" + name.replace("_", "-") in help_text


def test_unknown_key_from_the_command_line_exits_cleanly(tmp_path):
    result = run(train_cmd("--config", write(tmp_path, "colour: blue\n")))
    assert result.returncode == 2
    assert "colour" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("value", [1, 9])
def test_test_classes_are_the_generators_2_to_8(value):
    assert parse_config(["--test-mode", "--test-classes", "7"]).test_classes == 7
    with pytest.raises(UserError, match=f"test_classes: must be 2..8, got {value}"):
        parse_config(["--test-mode", "--test-classes", str(value)])


KNOB_ERRORS = [("--head-width", "1", "head_width: must be >= 2, got 1"),
               ("--label-smoothing", "1", "label_smoothing: must be in [0, 1)"),
               ("--ema-decay", "-0.5", "ema_decay: must be in [0, 1)")]


@pytest.mark.parametrize("flag, value, message", KNOB_ERRORS)
def test_the_model_and_averaging_knobs_are_checked_before_any_work(flag, value, message):
    with pytest.raises(UserError, match=re.escape(message)):
        parse_config(["--test-mode", flag, value])
