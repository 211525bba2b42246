#!/usr/bin/env bash
# deploy/cluster.sh on the private ports and folder of the client test
# (tests/cluster/run.sh, step 1): PL_TEST_CLUSTER_BASE_PORT (17200) and
# $PL_BUILD_DIR/stack-cluster-client.
set -euo pipefail
REPO_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=${PL_BUILD_DIR:-$REPO_DIR/build}
PL_CLUSTER_BASE_PORT=${PL_TEST_CLUSTER_BASE_PORT:-17200} \
	PL_STACK_DIR=$BUILD/stack-cluster-client \
	exec "$REPO_DIR/deploy/cluster.sh" "$@"
