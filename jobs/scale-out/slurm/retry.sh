#!/usr/bin/env bash
# Reruns failed shards of a submitted job alone and puts the commit after
# them. Each requeued task resumes its own units. The old commit is
# cancelled: Slurm never releases an afterok dependency on an array one of
# whose tasks failed, even once the task succeeds on requeue, so a new
# commit waits on the requeued tasks (it checks every shard itself).
#   jobs/scale-out/slurm/retry.sh JOB.toml ARRAY_JOB_ID COMMIT_JOB_ID TASK [TASK...] [-- sbatch options...]
# Prints the new commit's job id.
set -euo pipefail
usage="usage: retry.sh JOB.toml ARRAY_JOB_ID COMMIT_JOB_ID TASK [TASK...] [-- sbatch options...]"
job=${1:?$usage}
array=${2:?$usage}
commit=${3:?$usage}
shift 3
tasks=()
while [[ $# -gt 0 && $1 != -- ]]; do tasks+=("$1"); shift; done
[[ $# -gt 0 ]] && shift
[[ ${#tasks[@]} -gt 0 ]] || { echo "$usage" >&2; exit 2; }
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
after=afterok
for t in "${tasks[@]}"; do
  scontrol requeue "${array}_$t"
  # A requeued task waits about two minutes unless told otherwise. Not
  # "now": slurmd may not have forgotten the killed attempt yet and then
  # refuses the launch ("Job N already killed, do not launch batch job"),
  # failing the task again.
  scontrol update "JobId=${array}_$t" StartTime=now+5
  after+=":${array}_$t"
done
# The new commit may only be submitted once the tasks have left their
# failed state: an afterok on a task still FAILED is never satisfied.
for t in "${tasks[@]}"; do
  for _ in $(seq 300); do
    state=$(scontrol -o show job "${array}_$t" | grep -o 'JobState=[A-Z_]*' | head -n 1 || true)
    case $state in
      JobState=FAILED | JobState=CANCELLED | JobState=TIMEOUT | JobState=NODE_FAIL | JobState=OUT_OF_MEMORY | JobState=BOOT_FAIL | "") sleep 0.2 ;;
      *) break ;;
    esac
  done
done
scancel "$commit" 2>/dev/null || true
new=$(sbatch --parsable --dependency="$after" "$@" "$here/commit.sbatch" "$job")
echo "${new%%;*}"
