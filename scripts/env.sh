# Shared by scripts/quickstart, scripts/test and .ci/run: where caches live.
# Source it; it only sets variables.
EMBEDFLOW_HOME=${EMBEDFLOW_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/embedflow}
export EMBEDFLOW_HOME
# The cargo target dir lives outside the clone, so a fresh clone on a warm
# machine rebuilds only what changed.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$EMBEDFLOW_HOME/target}
