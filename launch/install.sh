#!/usr/bin/env bash
# Installs distjob and its pinned stack into a virtual environment, in the order the
# stack needs: mxnet first (gluonnlp and horovod build against it), numpy<1.24 held by
# constraints.txt throughout.
#   launch/install.sh [cpu|gpu|cpu-mpi] [VENV_DIR]     (default: cpu .venv)
# gpu: mxnet-cu112 and Horovod with NCCL (+MPI, for the Kubeflow launcher); needs CUDA 11.2,
# cuDNN 8, NCCL and OpenMPI on the host (Dockerfile.gpu has them).
# cpu-mpi: cpu with Horovod built with MPI too, as the image's; needs OpenMPI (mpicc) on the host.
set -euo pipefail
cd "$(dirname "$0")/.."
variant=${1:-cpu}
venv=${2:-.venv}
case "$variant" in
  cpu) mxnet="mxnet==1.9.1"; horovod_env=(HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1) ;;
  cpu-mpi) mxnet="mxnet==1.9.1"; horovod_env=(HOROVOD_WITH_GLOO=1 HOROVOD_WITH_MPI=1) ;;
  gpu) mxnet="mxnet-cu112==1.9.1"
       horovod_env=(HOROVOD_WITH_GLOO=1 HOROVOD_WITH_MPI=1 HOROVOD_GPU_OPERATIONS=NCCL) ;;
  *) echo "install.sh: unknown variant '$variant' (expected cpu, gpu or cpu-mpi)" >&2; exit 2 ;;
esac
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
pip=("$venv/bin/python" -m pip install -q --disable-pip-version-check -c constraints.txt)
# Built without isolation, horovod's setup.py imports these; gluonnlp needs cython.
"${pip[@]}" --upgrade pip setuptools wheel cython packaging cloudpickle psutil pyyaml
"${pip[@]}" "$mxnet"
"${pip[@]}" --no-build-isolation gluonnlp==0.10.0
# --no-cache-dir: pip's wheel cache would hand back an earlier build, whatever HOROVOD_* say.
"$venv/bin/python" -c "import horovod.mxnet" 2>/dev/null || \
  env "${horovod_env[@]}" HOROVOD_WITH_MXNET=1 HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_PYTORCH=1 \
    "${pip[@]}" --no-cache-dir --no-build-isolation horovod==0.28.1
"${pip[@]}" --no-build-isolation -e ".[${variant%-mpi},test]"
echo "installed distjob ($variant) into $venv"
