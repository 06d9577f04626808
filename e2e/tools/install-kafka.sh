#!/usr/bin/env bash
# Puts an Apache Kafka broker's classpath in the cache (once per pom change) and
# prints the directory holding its jars.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${FACET_CACHE:-$HOME/.cache/facet-e2e}"
pom="$here/kafka-pom.xml"
key="$(sha256sum "$pom" | cut -c1-12)"
libs="$cache/kafka-$key/libs"
if [ ! -f "$libs/.complete" ]; then
  echo "installing Kafka broker jars into $libs" >&2
  rm -rf "$libs" && mkdir -p "$libs"
  mvn -q -B -f "$pom" dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$libs" >&2
  touch "$libs/.complete"
fi
echo "$libs"
