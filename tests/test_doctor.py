"""distjob.doctor: which GPUs an MXNet build has kernels for, and the report of this host.

The fixtures' contents were listed by cuobjdump on an H100 (tests/fixtures/README.md);
the parser must read the same targets out of them.
"""
import subprocess
import sys

import mxnet as mx
import pytest

from distjob.config import UserError
from distjob.doctor import elf_section, fatbin_kernels, runs_on
from distjob.machine import check_gpu_runs, pick_context
from conftest import ROOT

FIXTURES = ROOT / "tests" / "fixtures"
MXNET_CU112 = FIXTURES / "mxnet_cu112_kernels.o"
SM90_PTX80 = FIXTURES / "nvcc_sm90_ptx80_kernels.o"


def kernels(path):
    return fatbin_kernels(elf_section(path, ".nv_fatbin"))


def doctor(*args):
    return subprocess.run([sys.executable, "-m", "distjob.doctor", *map(str, args)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_reads_the_kernel_targets_cuobjdump_lists():
    assert kernels(MXNET_CU112) == {("sm", 50), ("sm", 60), ("sm", 70), ("sm", 80), ("sm", 86)}
    assert kernels(SM90_PTX80) == {("sm", 90), ("compute", 80)}


@pytest.mark.parametrize("major, minor, expected", [
    (9, 0, False),   # H100/H200: no sm_9x SASS and no PTX to JIT (the driver said 209)
    (10, 0, False),  # Blackwell
    (8, 9, True),    # L4/L40: sm_86 SASS runs on 8.6 and later 8.x
    (8, 0, True),    # A100
    (7, 5, True),    # T4: sm_70 SASS
    (3, 7, False),   # K80: older than every target
])
def test_mxnet_cu112_kernels_run_on_its_own_architecture_family_only(major, minor, expected):
    assert runs_on(kernels(MXNET_CU112), major, minor) is expected


@pytest.mark.parametrize("major, minor, expected", [
    (9, 0, True),    # sm_90 SASS
    (8, 0, True),    # compute_80 PTX, JIT-compiled (loaded and ran on the H100 as PTX too)
    (12, 0, True),   # PTX runs on every later GPU
    (7, 5, False),   # older than the PTX
])
def test_ptx_is_jit_compiled_for_its_own_and_every_later_gpu(major, minor, expected):
    assert runs_on(kernels(SM90_PTX80), major, minor) is expected


def test_a_library_without_gpu_code_has_no_kernels():
    lib = mx.libinfo.find_lib_path()[0]
    assert elf_section(lib, ".nv_fatbin") is None
    assert elf_section(lib, ".text")  # the same reader finds a section that is there


def test_checks_a_library_against_a_named_gpu():
    h100 = doctor("--mxnet-lib", MXNET_CU112, "--compute-capability", "9.0")
    assert h100.returncode == 1, h100.stdout + h100.stderr
    assert "SASS sm_50 sm_60 sm_70 sm_80 sm_86; PTX none" in h100.stdout
    assert "compute capability 9.0: NO kernels for it" in h100.stdout
    assert "no kernel image is available" in h100.stdout

    a10 = doctor("--mxnet-lib", MXNET_CU112, "--compute-capability", "8.6")
    assert a10.returncode == 0, a10.stdout + a10.stderr
    assert "compute capability 8.6: has kernels for it" in a10.stdout and a10.stdout.endswith("OK\n")


def test_reports_this_hosts_mxnet_and_horovod():
    result = doctor()
    assert result.returncode == 0, result.stdout + result.stderr  # CPU mxnet, Horovod with Gloo
    assert "GPU kernels: none (a CPU build)" in result.stdout
    assert f"version {mx.__version__}; CUDA no" in result.stdout
    assert "Horovod 0.28.1: MXNet yes" in result.stdout and "Gloo yes" in result.stdout


def test_imports_neither_mxnet_nor_horovod_before_it_has_reported_what_it_can():
    code = "import sys, distjob.doctor; assert not {'mxnet', 'horovod'} & set(sys.modules), sys.modules.keys()"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("args, message", [
    (["--mxnet-lib", "no/such/libmxnet.so"], "--mxnet-lib: no such file: no/such/libmxnet.so"),
    (["--mxnet-lib", "README.md"], "--mxnet-lib: README.md: not a 64-bit ELF file"),
    (["--compute-capability", "9"], "expected MAJOR.MINOR such as 9.0, got '9'"),
])
def test_bad_flags_are_named(args, message):
    result = doctor(*args)
    assert result.returncode == 2 and message in result.stderr, result.stderr


def test_a_gpu_mxnet_cannot_use_fails_at_start_in_one_line():
    # This CPU build fails its first GPU operator just as mxnet-cu112 does on an H100.
    with pytest.raises(UserError, match=r"^--ctx auto: MXNet cannot run on gpu\(0\): Operator _ones is "
                                        r"not implemented for GPU\..*distjob\.doctor"):
        check_gpu_runs(mx.gpu(0), "--ctx auto")
    assert pick_context("cpu", 0) == mx.cpu()
