#!/usr/bin/env bash
# Submits a sharded embedflow job to Slurm: an array of SHARDS tasks and
# the commit, which runs once every task succeeded. Extra arguments go to
# both sbatch calls (e.g. --partition=gpu --account=ml).
#   jobs/scale-out/slurm/submit.sh JOB.toml SHARDS [sbatch options...]
# Prints "ARRAY_JOB_ID COMMIT_JOB_ID". `embedflow status JOB.toml` shows the
# shards' progress. A failed task is rerun alone (it resumes its own
# units), with the commit put after it:
#   jobs/scale-out/slurm/retry.sh JOB.toml ARRAY_JOB_ID COMMIT_JOB_ID TASK...
set -euo pipefail
job=${1:?usage: submit.sh JOB.toml SHARDS [sbatch options...]}
shards=${2:?usage: submit.sh JOB.toml SHARDS [sbatch options...]}
shift 2
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
"${EMBEDFLOW:-embedflow}" validate "$job" >&2
array=$(sbatch --parsable --array="0-$((shards - 1))" "$@" "$here/shard.sbatch" "$job")
array=${array%%;*}
commit=$(sbatch --parsable --dependency="afterok:$array" "$@" \
  "$here/commit.sbatch" "$job")
echo "$array ${commit%%;*}"
