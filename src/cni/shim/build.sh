#!/bin/sh
# Builds policyctl-cni's front end (policyctl-cni.c beside this file) as one static binary, so it
# runs on any Linux host whatever its C library: `sh build.sh OUT`. Used by the image
# (deploy/Dockerfile) and by installs from a checkout (src/cni/shim.ts), with the same flags.
set -eu
src="$(dirname "$0")/policyctl-cni.c"
out="$1"
${CC:-cc} -O2 -s -static -Wall -Wextra -o "$out.tmp.$$" "$src"
mv -f "$out.tmp.$$" "$out"
