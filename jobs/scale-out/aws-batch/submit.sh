#!/usr/bin/env bash
# Submits a sharded embedflow job to AWS Batch: an array job of SHARDS
# children (each finds its shard in AWS_BATCH_JOB_ARRAY_INDEX; the count
# comes from AWS_BATCH_JOB_ARRAY_SIZE where set, else EMBEDFLOW_SHARDS,
# passed below), then the commit, which waits for every child. A child
# that fails is retried alone (retryStrategy) and resumes its own units.
#   aws batch register-job-definition --cli-input-json file://jobs/scale-out/aws-batch/job-definition.json
#   jobs/scale-out/aws-batch/submit.sh JOB_QUEUE SHARDS [JOB_PATH_IN_IMAGE]
# On GPU queues add {"type": "GPU", "value": "1"} to resourceRequirements
# and "--device", "cuda" to the command: Batch sets CUDA_VISIBLE_DEVICES.
set -euo pipefail
queue=${1:?usage: submit.sh JOB_QUEUE SHARDS [JOB_PATH_IN_IMAGE]}
shards=${2:?usage: submit.sh JOB_QUEUE SHARDS [JOB_PATH_IN_IMAGE]}
job=${3:-/etc/embedflow/news_sharded.toml}
array=$(aws batch submit-job --job-name embedflow-shards --job-queue "$queue" \
  --job-definition embedflow-shard --array-properties "size=$shards" \
  --container-overrides "{\"command\": [\"run\", \"$job\", \"--progress\", \"off\"], \"environment\": [{\"name\": \"EMBEDFLOW_SHARDS\", \"value\": \"$shards\"}]}" \
  --query jobId --output text)
commit=$(aws batch submit-job --job-name embedflow-commit --job-queue "$queue" \
  --job-definition embedflow-shard --depends-on "jobId=$array" \
  --container-overrides "{\"command\": [\"commit\", \"$job\", \"--progress\", \"off\"]}" \
  --query jobId --output text)
echo "$array $commit"
