#!/bin/bash
# oripid build on several nodes with SLURM: one `accelerate launch` per node, one process per GPU.
#
#   WORKDIR=/shared/oripid/W sbatch --nodes 4 docs/examples/slurm.sh
#
# WORKDIR must be on a filesystem every node sees at the same path, with oripid.yaml and plan.json
# already written (`oripid plan --workdir W`). Checkpoints must be in a shared HF_HOME, downloaded
# beforehand (`hf download REPO`; gated ones need your login), because compute nodes often have no
# internet. Shards, not samples, are divided between processes, so any node or GPU count gives the
# same files; resubmitting the job (or a requeue) resumes: finished shards are skipped.
#SBATCH --job-name=oripid-build
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --time=24:00:00
#SBATCH --requeue
#SBATCH --output=oripid-build-%j.log

set -euo pipefail

export WORKDIR=${WORKDIR:?set WORKDIR to the workspace on the shared filesystem}
export GPUS_PER_NODE=${GPUS_PER_NODE:-8}
export MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
export MASTER_PORT=${MASTER_PORT:-29500}
export HF_HOME=${HF_HOME:-/shared/hf_home}
export HF_HUB_OFFLINE=1
# Activate the environment oripid is installed in, e.g.:
# source /shared/oripid/.venv/bin/activate

# Each task is one node; SLURM_NODEID is its rank among the job's nodes.
srun --kill-on-bad-exit=1 bash -c '
accelerate launch \
    --multi_gpu \
    --num_machines "$SLURM_NNODES" \
    --machine_rank "$SLURM_NODEID" \
    --num_processes "$((SLURM_NNODES * GPUS_PER_NODE))" \
    --main_process_ip "$MASTER_ADDR" \
    --main_process_port "$MASTER_PORT" \
    --rdzv_backend static \
    --same_network \
    --mixed_precision no \
    --dynamo_backend no \
    -m oripid build --workdir "$WORKDIR"
'

# The table of done, pending and failed shards per split and model.
oripid status --workdir "$WORKDIR"
