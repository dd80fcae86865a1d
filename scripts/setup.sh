#!/usr/bin/env bash
# Set up a fresh Debian machine for policyctl: the kernel tools the agent and the lab drive,
# and the project's npm dependencies (which bring Node 24 for npm scripts and npx).
# Run as root (or with sudo) from anywhere; it is idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "setup: run as root (sudo bash scripts/setup.sh): it installs iptables, ipset and the CNI plugins" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends \
  iptables ipset iproute2 conntrack containernetworking-plugins iputils-ping ncat kmod procps iperf3 gcc libc6-dev >/dev/null
# python3: the lab's IPVS-path proxy (src/lab/ipvs-proxy.py) needs setsockopt(IP_TRANSPARENT), which Node lacks;
# the agent's drop log reads its NFLOG group with src/sync/nflog-reader.py (Node has no netlink sockets).
apt-get install -y -qq --no-install-recommends python3 >/dev/null
# The image test (test/e2e/image.test.ts, scripts/build-image.sh): podman and buildah run as root
# with runc (scripts/containers.conf says why not crun); mmdebstrap builds the local Debian base
# where no registry serves node:24-bookworm-slim. Rootful on the machine's own filesystem: no
# uidmap or fuse-overlayfs needed.
apt-get install -y -qq --no-install-recommends podman buildah runc mmdebstrap >/dev/null
# kubectl renders deploy/kustomization.yaml in test/deploy/kustomize.test.ts. Where none is
# installed, Debian's kubernetes-client (kubectl 1.20 on bookworm: its kustomize renders the base;
# the overlay tests need kustomize 4 or later and are skipped with it).
command -v kubectl >/dev/null || apt-get install -y -qq --no-install-recommends kubernetes-client >/dev/null
# Graphviz's dot renders `policyctl reach -o dot` in src/cli/reach-formats.test.ts (which fails
# under CI=true without it) and the README's pictures (scripts/render-reach-images.ts).
apt-get install -y -qq --no-install-recommends graphviz >/dev/null
# br_netfilter makes bridged pod-to-pod traffic visible to iptables (built in on some kernels).
modprobe br_netfilter 2>/dev/null || true

npm ci --no-audit --no-fund --loglevel=error
echo "setup: done ($(node_modules/.bin/node --version), $(iptables --version), $(ipset --version | head -1), $(podman --version))"
