#!/usr/bin/env bash
# Runs the sharded job on Kubernetes: the job file as a ConfigMap, the
# Indexed Job, a wait for it, then the commit Job.
#   jobs/scale-out/kubernetes/run.sh [JOB.toml]
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
job=${1:-$here/../news_sharded.toml}
kubectl create configmap embedflow-jobs --from-file=news_sharded.toml="$job" \
  --dry-run=client -o yaml | kubectl apply -f -
kubectl apply -f "$here/shards-job.yaml"
kubectl wait --for=condition=complete --timeout=24h job/embedflow-news-shards
kubectl apply -f "$here/commit-job.yaml"
kubectl wait --for=condition=complete --timeout=1h job/embedflow-news-commit
kubectl logs job/embedflow-news-commit
