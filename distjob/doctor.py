"""What this host can run: `python -m distjob.doctor`.

Prints the GPUs the CUDA driver sees, the MXNet build (its features, and the GPU
architectures its kernels were compiled for), and the Horovod build. Exits 1 when a GPU
is here (or named by --compute-capability) that the installed MXNet cannot run on, or
when MXNet or Horovod cannot be imported; 0 otherwise.

It asks the CUDA driver and reads libmxnet.so itself before importing anything, so it
still explains a broken GPU install: `import mxnet` fails outright when the CUDA 11
libraries the wheel links are missing, and an MXNet whose kernels were not compiled for
the card fails only at its first GPU operator ("no kernel image is available").

    python -m distjob.doctor                            # this host
    python -m distjob.doctor --compute-capability 9.0   # would this MXNet run on an H100?
    python -m distjob.doctor --mxnet-lib path/to/libmxnet.so --compute-capability 8.0
"""
import argparse
import ctypes
import importlib.util
import os
import struct
import sys

FATBIN_MAGIC = struct.pack("<I", 0xBA55ED50)  # starts each nvcc fat binary in .nv_fatbin
FATBIN_KINDS = {1: "compute", 2: "sm"}  # PTX (JIT-compiled by the driver), SASS (one arch family)


def elf_section(path, name):
    """The bytes of section `name` in a 64-bit ELF file, or None when it has none."""
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2:
            raise ValueError(f"{path}: not a 64-bit ELF file")
        (table_at,) = struct.unpack_from("<Q", head, 0x28)
        entry_size, count, names_index = struct.unpack_from("<HHH", head, 0x3A)
        f.seek(table_at)
        table = f.read(entry_size * count)

        def section(i):  # (name offset, offset in file, size)
            name_at, _, _, _, offset, size = struct.unpack_from("<IIQQQQ", table, i * entry_size)
            return name_at, offset, size

        _, names_at, names_size = section(names_index)
        f.seek(names_at)
        names = f.read(names_size)
        for i in range(count):
            name_at, offset, size = section(i)
            if names[name_at:names.index(b"\0", name_at)] == name.encode():
                f.seek(offset)
                return f.read(size)
    return None


def fatbin_kernels(blob):
    """{("sm", 86), ("compute", 80), ...}: the SASS and PTX targets of the fat binaries in blob.

    Layout (as cuobjdump reads it): a 16-byte header (magic, version, header size, body
    size), then entries, each a header (kind u16 at 0, header size u32 at 4, payload size
    u64 at 8, arch u32 at 28) and its payload.
    """
    kernels = set()
    start = blob.find(FATBIN_MAGIC)
    while start >= 0:
        _, _, header_size, body_size = struct.unpack_from("<IHHQ", blob, start)
        entry, end = start + header_size, start + header_size + body_size
        while entry < end:
            kind, _, entry_header_size, payload_size = struct.unpack_from("<HHIQ", blob, entry)
            (arch,) = struct.unpack_from("<I", blob, entry + 28)
            if kind in FATBIN_KINDS:
                kernels.add((FATBIN_KINDS[kind], arch))
            entry += entry_header_size + payload_size
        start = blob.find(FATBIN_MAGIC, end)
    return kernels


def runs_on(kernels, major, minor):
    """Whether a GPU of compute capability major.minor can run these kernels.

    SASS for sm_XY runs on X.Z for Z >= Y only (same major); PTX for compute_XY is
    JIT-compiled by the driver for any X.Y or newer.
    """
    cc = major * 10 + minor
    return any(arch <= cc and (kind == "compute" or arch // 10 == major) for kind, arch in kernels)


def describe(kernels):
    sass = " ".join(f"sm_{a}" for k, a in sorted(kernels) if k == "sm")
    ptx = " ".join(f"compute_{a}" for k, a in sorted(kernels) if k == "compute")
    return f"SASS {sass or 'none'}; PTX {ptx or 'none (nothing to JIT for newer GPUs)'}"


def mxnet_error_reason(error):
    """The line of an MXNetError that says what went wrong (its last; the rest is a C++ trace)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1].removeprefix("MXNetError: ") if lines else repr(error)


def gpu_operator_error(ctx):
    """Run one MXNet operator on ctx: None if it ran, else MXNet's reason. A wheel without
    kernels for the card fails only here, at its first GPU operator, not at import."""
    import mxnet as mx
    try:
        mx.nd.ones((1,), ctx=ctx).asscalar()
    except mx.base.MXNetError as e:
        return mxnet_error_reason(e)
    return None


def cuda_gpus():
    """(driver version or why there is none, [(name, (major, minor), GiB)]) from the CUDA driver."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return "no NVIDIA driver (libcuda.so.1 not found)", []
    if (err := cuda.cuInit(0)) != 0:
        return f"the CUDA driver is present but cuInit failed with CUresult {err}", []
    version, count = ctypes.c_int(), ctypes.c_int()
    cuda.cuDriverGetVersion(ctypes.byref(version))
    cuda.cuDeviceGetCount(ctypes.byref(count))
    gpus = []
    for i in range(count.value):
        device, major, minor = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
        name, memory = ctypes.create_string_buffer(256), ctypes.c_size_t()
        cuda.cuDeviceGet(ctypes.byref(device), i)
        cuda.cuDeviceGetName(name, 256, device)
        cuda.cuDeviceGetAttribute(ctypes.byref(major), 75, device)  # COMPUTE_CAPABILITY_MAJOR
        cuda.cuDeviceGetAttribute(ctypes.byref(minor), 76, device)  # COMPUTE_CAPABILITY_MINOR
        cuda.cuDeviceTotalMem_v2(ctypes.byref(memory), device)
        gpus.append((name.value.decode(), (major.value, minor.value), memory.value / 2**30))
    v = version.value
    return f"CUDA driver API {v // 1000}.{v % 1000 // 10}", gpus


def check_mxnet(lib, targets, problems):
    """Report the kernels in libmxnet.so and whether each target (label, (major, minor)) runs them."""
    blob = elf_section(lib, ".nv_fatbin")
    kernels = fatbin_kernels(blob) if blob else set()
    print(f"  library: {lib}")
    if not kernels:
        print("  GPU kernels: none (a CPU build)")
    else:
        print(f"  GPU kernels: {describe(kernels)}")
    for label, (major, minor) in targets:
        if runs_on(kernels, major, minor):
            print(f"  {label}: has kernels for it")
        else:
            print(f"  {label}: NO kernels for it")
            problems.append(f"this MXNet has no GPU kernels for {label}; its GPU operators "
                            "would fail with 'no kernel image is available for execution on the device'")


def check_installed_mxnet(gpus, targets, problems):
    spec = importlib.util.find_spec("mxnet")
    if spec is None:
        print("MXNet: not installed")
        problems.append("mxnet is not installed (launch/install.sh cpu|gpu)")
        return
    print("MXNet:")
    lib = os.path.join(os.path.dirname(spec.origin), "libmxnet.so")
    if os.path.isfile(lib):
        check_mxnet(lib, targets, problems)
    else:  # a source build may keep it elsewhere (MXNET_LIBRARY_PATH)
        print(f"  library: not at {lib}; its GPU kernels are not checked (try --mxnet-lib)")
    try:
        import mxnet as mx
    except Exception as e:  # a GPU wheel without its CUDA libraries fails here, in the loader
        print(f"  import mxnet: FAILED: {e}")
        problems.append(f"import mxnet failed: {e}")
        return
    features = mx.runtime.Features()
    wanted = ("CUDA", "CUDNN", "NCCL", "CUDA_RTC", "TENSORRT", "MKLDNN", "BLAS_OPEN")
    print(f"  version {mx.__version__}; " + ", ".join(
        f"{name} {'yes' if features.is_enabled(name) else 'no'}" for name in wanted))
    if not features.is_enabled("CUDA"):
        return
    print(f"  GPUs MXNet sees: {mx.context.num_gpus()}")
    for i in range(len(gpus)):  # the real test: one operator on each GPU
        reason = gpu_operator_error(mx.gpu(i))
        if reason is None:
            print(f"  gpu({i}): an operator ran")
        else:
            print(f"  gpu({i}): an operator FAILED: {reason}")
            problems.append(f"MXNet cannot run on gpu({i}): {reason}")


def check_horovod(problems):
    if importlib.util.find_spec("horovod") is None:
        print("Horovod: not installed")
        problems.append("horovod is not installed (launch/install.sh cpu|gpu)")
        return
    try:
        import horovod
        import horovod.mxnet as hvd
    except Exception as e:  # built without MXNet, or against another mxnet
        print(f"Horovod: import horovod.mxnet FAILED: {e}")
        problems.append(f"import horovod.mxnet failed: {e}")
        return
    built = {"NCCL": hvd.nccl_built(), "Gloo": hvd.gloo_built(), "MPI": hvd.mpi_built(),
             "CUDA": hvd.cuda_built()}
    print(f"Horovod {horovod.__version__}: MXNet yes, " +
          ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in built.items()))


def compute_capability(text):
    try:
        major, minor = (int(part) for part in text.split("."))
        return major, minor
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MAJOR.MINOR such as 9.0, got {text!r}") from None


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m distjob.doctor", description=__doc__.split("\n")[0])
    parser.add_argument("--compute-capability", type=compute_capability, action="append", default=[],
                        metavar="X.Y", help="also check MXNet's kernels against a GPU of this "
                        "compute capability (8.0 A100, 8.6 A10/RTX 30, 8.9 L4/L40, 9.0 H100/H200)")
    parser.add_argument("--mxnet-lib", metavar="PATH",
                        help="check this libmxnet.so (say, unzipped from a wheel) instead of the "
                             "installed MXNet; reads it only, imports nothing")
    args = parser.parse_args(argv)
    if args.mxnet_lib and not os.path.isfile(args.mxnet_lib):
        parser.error(f"--mxnet-lib: no such file: {args.mxnet_lib}")

    problems = []
    driver, gpus = cuda_gpus()
    print(f"GPUs: {len(gpus)} ({driver})")
    for i, (name, (major, minor), gib) in enumerate(gpus):
        print(f"  gpu {i}: {name}, compute capability {major}.{minor}, {gib:.1f} GiB")
    targets = [(f"gpu {i} ({name}, compute capability {major}.{minor})", (major, minor))
               for i, (name, (major, minor), _) in enumerate(gpus)]
    targets += [(f"compute capability {major}.{minor}", (major, minor))
                for major, minor in args.compute_capability]

    if args.mxnet_lib:
        print("MXNet:")
        try:
            check_mxnet(args.mxnet_lib, targets, problems)
        except ValueError as e:
            parser.error(f"--mxnet-lib: {e}")
    else:
        check_installed_mxnet(gpus, targets, problems)
        check_horovod(problems)

    for problem in problems:
        print(f"PROBLEM: {problem}")
    print("OK" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
