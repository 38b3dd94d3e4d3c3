#!/usr/bin/env bash
# Start distjob under horovodrun with sensible defaults, printing the command it runs.
#
#   launch/run.sh [-n WORKERS] [--cpu|--gpu] [-H host1:4,host2:4 | --hostfile FILE]
#                 [--nic eth0] [--output-dir DIR] [-- ARGS FOR distjob.train...]
#
#   launch/run.sh -n 4 -- --test-mode                     # 4 CPU workers on this machine
#   launch/run.sh --gpu -- --config configs/agnews.yaml --data-dir /data/ag_news
#   launch/run.sh --gpu -H host1:4,host2:4 --nic eth0 -- --data-dir /shared/ag_news
#
# Workers default to the GPU count (--gpu, or GPUs found) or the CPU core count.
# Several hosts: every host needs the same python environment at the same path, the
# data dir readable at the same path, and passwordless SSH from this host; only rank 0
# writes --output-dir (put it on shared storage so a restarted job can resume there).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || command -v python3 )}
workers="" device="" hosts=() nic=() output=()
while [ $# -gt 0 ]; do
  case "$1" in
    -n|--workers) workers=$2; shift 2 ;;
    --cpu|--gpu) device=${1#--}; shift ;;
    -H|--hosts) hosts=(-H "$2"); shift 2 ;;
    --hostfile) hosts=(--hostfile "$2"); shift 2 ;;
    --nic) nic=(--network-interface "$2"); shift 2 ;;
    --output-dir) output=(--output-dir "$2"); shift 2 ;;
    --) shift; break ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "launch/run.sh: unknown option '$1' (train arguments go after --)" >&2; exit 2 ;;
  esac
done
gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
[ -n "$device" ] || device=$([ "${gpus:-0}" -gt 0 ] && echo gpu || echo cpu)
cores=$(nproc)
[ -n "$workers" ] || workers=$([ "$device" = gpu ] && echo "$gpus" || echo "$cores")
# CPU: split this host's cores between its workers instead of letting each grab them all.
threads=$(( cores / workers > 0 ? cores / workers : 1 ))
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$threads} MXNET_CPU_WORKER_NTHREADS=${MXNET_CPU_WORKER_NTHREADS:-$threads}
# A worker that vanishes (host lost) fails the job in bounded time instead of hanging it.
export HOROVOD_GLOO_TIMEOUT_SECONDS=${HOROVOD_GLOO_TIMEOUT_SECONDS:-60}
bin=$(dirname "$python")
horovodrun=$([ -x "$bin/horovodrun" ] && echo "$bin/horovodrun" || echo horovodrun)
cmd=("$horovodrun" -np "$workers" "${hosts[@]}" "${nic[@]}" --gloo
     "$python" -m distjob.train --ctx "$device" "${output[@]}" "$@")
echo "+ OMP_NUM_THREADS=$OMP_NUM_THREADS ${cmd[*]}"
exec "${cmd[@]}"
