"""Any number of classes: K and the names come from the data, and every tool follows them."""
import csv
import json
import re
import shutil
import sys

import numpy as np
import pytest

from distjob import download, generated, readers
from distjob.config import UserError
from conftest import one_error_line, run, run_all, train_cmd


def tool_cmd(name, *args):
    return [sys.executable, "-m", f"distjob.{name}", *map(str, args)]


def tool(name, *args, **kw):
    return run(tool_cmd(name, *args), **kw)


# ---- reading K and the names -----------------------------------------------------------
def test_classes_txt_gives_k_and_the_names_else_the_highest_label_does(tmp_path):
    (tmp_path / "train.csv").write_text('"1","a b"\n"3","c","d","e"\n')
    labels, texts, names, _ = readers.read_training_csv(str(tmp_path / "train.csv"))
    assert labels.tolist() == [0, 2] and texts == ["a b", "c d e"]  # text columns joined with a space
    assert names == ["class 1", "class 2", "class 3"]
    generated.write_class_names(tmp_path / "classes.txt", ["Company", "Artist", "Film", "Album"])
    with open(tmp_path / "classes.txt", "a") as f:
        f.write("\n\n")  # blank lines at the end are not classes
    assert readers.read_training_csv(str(tmp_path / "train.csv"))[2] == ["Company", "Artist", "Film", "Album"]


@pytest.mark.parametrize("classes_txt, train, message", [
    ("World\nSports\n", '"1","a"\n"3","b"\n',
     r"train\.csv:2: class must be 1\.\.2 \(\S+classes\.txt names 2\), got '3'"),
    ("World\n\nSports\n", '"1","a"\n', r"classes\.txt:2: an empty class name"),
    ("World\nSports\nWorld\n", '"1","a"\n', r"classes\.txt:3: 'World' is named twice \(line 1\)"),
    ("World\n", '"1","a"\n', r"classes\.txt: names 1 class; a classifier needs 2 or more"),
    (None, '"1","a"\n"1","b"\n', r"train\.csv: every row is class 1"),
])
def test_classes_that_do_not_fit_are_one_error_naming_file_and_line(tmp_path, classes_txt, train, message):
    if classes_txt is not None:
        (tmp_path / "classes.txt").write_text(classes_txt)
    (tmp_path / "train.csv").write_text(train)
    with pytest.raises(UserError, match=message):
        readers.read_training_csv(str(tmp_path / "train.csv"))


def test_the_generator_makes_k_balanced_topics_of_glove_words():
    for k in (2, 7):
        labels, texts = generated.generate_rows(700, seed=3, num_classes=k)
        assert np.bincount(labels).tolist() == [700 // k] * k
        assert labels.tolist() == generated.generate_rows(700, seed=3, num_classes=k)[0].tolist()
    # Four topics are what test mode generated before there were more: the same rows.
    assert list(generated.TOPICS)[:4] == list(download.AGNEWS_CLASSES)


def test_four_topics_train_as_well_as_before(test_mode_run):
    out, _ = test_mode_run  # --test-mode: 4 topics, 4 epochs
    assert json.loads((out / "results.json").read_text())["test_accuracy"] > 0.9


# ---- test mode with 2 and 7 classes, through every tool --------------------------------
@pytest.fixture(scope="module", params=[2, 7])
def k_run(request, tmp_path_factory):
    """A 2-epoch test-mode run with K generated topics: (K, output dir, names)."""
    k = request.param
    out = tmp_path_factory.mktemp(f"test-mode-{k}")
    result = run(train_cmd("--test-mode", "--test-classes", k, "--epochs", 2, "--output-dir", out))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return k, out, list(generated.TOPICS)[:k]


def test_training_reports_k_classes_by_name(k_run):
    k, out, names = k_run
    assert json.loads((out / "results.json").read_text())["test_accuracy"] > 0.8
    report = (out / "classification_report.txt").read_text()
    assert [line.split()[0] for line in report.splitlines()[2:2 + k]] == names
    matrix = (out / "confusion_matrix.txt").read_text().splitlines()
    assert matrix[1].split() == names and len(matrix) == 2 + k
    assert json.loads(next((out / "checkpoints").glob("epoch-*/meta.json")).read_text())["classes"] == names


def test_evaluate_predict_and_explain_name_the_k_classes(k_run, tmp_path):
    k, out, names = k_run
    evaluated = tool("evaluate", out, "--output-dir", tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    assert f"{k} classes ({', '.join(names)})" in evaluated.stdout
    assert all(re.search(rf"^ *{re.escape(name)} +[01]\.\d{{4}}", evaluated.stdout, re.M) for name in names)

    lines = [" ".join(words[:8]) for words in list(generated.TOPICS.values())[:k]]
    predicted = tool("predict", out, input="\n".join(lines) + "\n")
    exported = tool("predict", out, "--exported", input="\n".join(lines) + "\n")
    assert predicted.returncode == 0 and exported.returncode == 0, predicted.stderr + exported.stderr
    assert [line.split("\t")[0] for line in predicted.stdout.splitlines()] == names
    assert exported.stdout == predicted.stdout  # the exported graph has K outputs too

    explained = tool("explain", out, lines[-1], "--num-samples", 100, "--output", tmp_path / "why.html")
    assert explained.returncode == 0, explained.stderr
    printed = re.findall(r"^  (\S+) +[0-9.]+", explained.stdout, re.M)
    assert printed == names and f"{names[-1]} " in re.search(r".*<- predicted", explained.stdout).group()


def test_a_resume_into_other_classes_stops(k_run, tmp_path):
    k, out, _ = k_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    result = run(train_cmd("--test-mode", "--test-classes", k + 1, "--epochs", 3, "--output-dir", copy))
    one_error_line(result, f"--test-classes {k + 1} (the checkpoint's run: {k})")


# ---- real rows in 2 columns, with a classes.txt ------------------------------------------
@pytest.fixture(scope="module")
def title_data(tmp_path_factory, agnews_dir):
    """Real AG News rows as "class","title" of 3 classes (its Sports, Business and Sci/Tech,
    numbered 1..3), with a classes.txt naming them."""
    data_dir = tmp_path_factory.mktemp("titles")
    with open(agnews_dir / "test.csv", newline="") as f:
        rows = [(int(row[0]) - 1, row[1]) for row in csv.reader(f) if row[0] != "1"]
    with open(data_dir / "train.csv", "w", newline="") as f:
        csv.writer(f, quoting=csv.QUOTE_ALL).writerows(rows[:3000])
    generated.write_class_names(data_dir / "classes.txt", ["sport", "money", "gadgets"])
    return data_dir


def test_a_two_column_data_set_trains_and_reports_with_its_names(title_data, tmp_path):
    out = tmp_path / "out"
    result = run(train_cmd("--data-dir", title_data, "--holdout-from-train", 600, "--epochs", 4,
                           "--output-dir", out))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "3 classes (sport, money, gadgets)" in result.stdout
    assert json.loads((out / "results.json").read_text())["test_accuracy"] > 0.75  # titles alone, chance 0.33
    assert (out / "confusion_matrix.txt").read_text().splitlines()[1].split() == ["sport", "money", "gadgets"]
    predicted = tool("predict", out, input="Oil prices jumped and stocks fell as investors sold shares\n")
    assert predicted.stdout.startswith("money\t"), predicted.stdout + predicted.stderr

    # Other names in classes.txt are another data set: the run does not resume into them.
    shutil.copytree(title_data, tmp_path / "renamed")
    generated.write_class_names(tmp_path / "renamed" / "classes.txt", ["sport", "money", "tech"])
    # ... nor does evaluate, nor on an evaluation file with a class the checkpoint does not have.
    (tmp_path / "other.csv").write_text('"1","Yankees win"\n"4","A fourth class"\n')
    resumed, renamed, other = run_all([
        train_cmd("--data-dir", tmp_path / "renamed", "--holdout-from-train", 600, "--epochs", 5, "--output-dir", out),
        tool_cmd("evaluate", out, "--data-dir", tmp_path / "renamed"),
        tool_cmd("evaluate", out, "--data-dir", tmp_path, "--test-file", "other.csv")])
    one_error_line(resumed, "classes.txt has other contents")
    one_error_line(renamed, "money, tech): not the classes of the checkpoint (3 classes (sport, money, gadgets))")
    one_error_line(other, "other.csv:2: class must be 1..3 (the checkpoint's 3 classes (sport, money, gadgets)), "
                          "got '4'")


LABELS_OUTSIDE = {  # case -> what the one line says
    "train above classes.txt": "train.csv:2: class must be 1..2 (",
    "test above classes.txt": "test.csv:1: class must be 1..2 (",
    "test above the training file": "test.csv:1: class must be 1..2 (the highest class in ",
}


def label_case_command(tmp_path, case):
    """Write the case's files into tmp_path -> the train command that reads them."""
    (tmp_path / "train.csv").write_text('"1","world news"\n' + ('"3","too high"\n' if case.startswith("train") else
                                                                '"2","sports news"\n'))
    (tmp_path / "test.csv").write_text('"3","a third class"\n' if case.startswith("test") else '"1","x"\n')
    if "classes.txt" in case:
        generated.write_class_names(tmp_path / "classes.txt", ["World", "Sports"])
    return train_cmd("--data-dir", tmp_path, "--epochs", 1, "--output-dir", tmp_path / "out")


@pytest.fixture(scope="module")
def label_outside_runs(tmp_path_factory):
    """case -> (its directory, its result): every case's process started at once."""
    dirs = {case: tmp_path_factory.mktemp("labels") for case in LABELS_OUTSIDE}
    results = run_all([label_case_command(directory, case) for case, directory in dirs.items()])
    return {case: (dirs[case], result) for case, result in zip(dirs, results)}


@pytest.mark.parametrize("case", LABELS_OUTSIDE)
def test_a_label_outside_1_to_k_is_one_line_naming_file_and_line(label_outside_runs, case):
    tmp_path, result = label_outside_runs[case]
    one_error_line(result, LABELS_OUTSIDE[case])
    assert not (tmp_path / "out" / "checkpoints").exists()
