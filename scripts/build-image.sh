#!/usr/bin/env bash
# Build deploy/Dockerfile (the image a user builds and pushes, deploy/README.md) with podman or
# buildah from Debian's packages, on a Debian machine, as root:
#
#   bash scripts/build-image.sh [--tag IMAGE] [--base IMAGE] [--builder podman|buildah]
#
# The base is the Dockerfile's build argument BASE (default: its `ARG BASE=`, the official
# node:24-bookworm-slim). In order, the first that works is used:
#   1. --base IMAGE, as given (pulled when missing);
#   2. the default base, when it is already in local storage;
#   3. a local equivalent built earlier (step 5);
#   4. the default base, pulled;
#   5. a local equivalent, built here when no registry serves the default base: Debian bookworm
#      (minbase, like debian:bookworm-slim) from Debian's mirror with mmdebstrap, with Node and
#      npm from the npm registry (the packages node-linux-<arch> at the version package-lock.json
#      pins for the tests, and npm@11, Node 24's npm) installed under /usr/local as the official
#      image has them. It is tagged localhost/policyctl-node-base:<node version>-bookworm.
#
# Caching: the local base is built once (and its npm tarballs kept in $CACHE_DIR); the image
# build keeps its layers (apt, npm ci, and the build stage that compiles policyctl-cni's front
# end, whose apt-get install of gcc reaches Debian's mirror like the image's own), so a second
# build with changed sources only redoes the COPY of bin/ and src/ (and the front end's compile
# when src/cni/shim/ changed). Both stages start from BASE. Prints the image's size at the end.
#
# The build's RUN steps use the machine's network namespace (--network host): a private build
# network would make podman add bridge and NAT rules to the machine's own iptables. Behind a
# TLS-intercepting proxy npm needs the machine's CA bundle: it is handed to the build as the
# secret `ca-certificates` (never stored in the image; see the Dockerfile).
#
# Environment: TAG, BASE, BUILDER as the flags; CACHE_DIR (default /var/cache/policyctl-image);
# CONTAINERS_CONF (default scripts/containers.conf: runc, cgroupfs, no default ulimits; read in
# place of the machine's containers.conf, which stays untouched).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

die() { echo "build-image: $*" >&2; exit 1; }
say() { echo "build-image: $*" >&2; }

VERSION=$(sed -n 's/^  "version": "\(.*\)",$/\1/p' package.json | head -n1)
[ -n "$VERSION" ] || die "cannot read the version from package.json"
DEFAULT_BASE=$(sed -n 's/^ARG BASE=//p' deploy/Dockerfile | head -n1)
[ -n "$DEFAULT_BASE" ] || die "deploy/Dockerfile has no 'ARG BASE=<image>' line"

TAG=${TAG:-localhost/policyctl:$VERSION}
BASE=${BASE:-}
BUILDER=${BUILDER:-}
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) TAG=${2:?--tag needs an image name}; shift 2 ;;
    --base) BASE=${2:?--base needs an image name}; shift 2 ;;
    --builder) BUILDER=${2:?--builder needs podman or buildah}; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
CACHE_DIR=${CACHE_DIR:-/var/cache/policyctl-image}
export CONTAINERS_CONF=${CONTAINERS_CONF:-$ROOT/scripts/containers.conf}

[ "$(id -u)" -eq 0 ] || die "run as root (sudo bash scripts/build-image.sh): podman runs rootful here, and missing tools are installed with apt-get"

apt_install() {
  say "installing $* (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# The builder: podman by default, buildah when asked or when it is the only one installed.
if [ -z "$BUILDER" ]; then
  if command -v podman >/dev/null; then BUILDER=podman
  elif command -v buildah >/dev/null; then BUILDER=buildah
  else BUILDER=podman
  fi
fi
case "$BUILDER" in
  podman) command -v podman >/dev/null && command -v runc >/dev/null || apt_install podman buildah runc ;;
  buildah) command -v buildah >/dev/null && command -v runc >/dev/null || apt_install buildah runc ;;
  *) die "--builder must be podman or buildah, got '$BUILDER'" ;;
esac

image_exists() {
  if [ "$BUILDER" = podman ]; then podman image exists "$1"; else buildah inspect --type image "$1" >/dev/null 2>&1; fi
}
image_size() { "$BUILDER" images --format '{{.Size}}' "$1" | head -n1; }
image_id() { "$BUILDER" images -q --no-trunc "$1" 2>/dev/null | head -n1 || true; }

# The local equivalent of the default base (step 5 above).
node_arch() {
  case "$(dpkg --print-architecture)" in
    amd64) echo x64 ;;
    arm64) echo arm64 ;;
    *) die "no node-linux-* npm package for architecture $(dpkg --print-architecture)" ;;
  esac
}
# The Node that package-lock.json pins for the tests (devDependency "node"), so the image runs
# the Node the test suite runs.
NODE_VERSION=${NODE_VERSION:-$(awk '/"node_modules\/node": \{/ { f = 1; next } f && /"version":/ { gsub(/[",]/, "", $2); print $2; exit }' package-lock.json)}
case "$NODE_VERSION" in 24.*) ;; *) die "package-lock.json pins node '$NODE_VERSION', expected a 24.x version" ;; esac
NPM_SPEC=${NPM_SPEC:-npm@11}
LOCAL_BASE=localhost/policyctl-node-base:$NODE_VERSION-bookworm

build_local_base() {
  command -v mmdebstrap >/dev/null || apt_install mmdebstrap
  command -v npm >/dev/null || die "npm is needed to fetch Node $NODE_VERSION and npm from the npm registry (bash scripts/setup.sh installs the project's dependencies)"
  local arch dl
  arch=$(node_arch)
  dl="$CACHE_DIR/npm-packages"
  mkdir -p "$dl"
  local node_tgz="$dl/node-linux-$arch-$NODE_VERSION.tgz"
  if [ ! -s "$node_tgz" ]; then
    say "fetching node-linux-$arch@$NODE_VERSION from the npm registry"
    (cd "$dl" && npm pack --silent "node-linux-$arch@$NODE_VERSION" >/dev/null)
  fi
  local npm_tgz
  npm_tgz=$(ls -1 "$dl"/npm-11.*.tgz 2>/dev/null | sort -V | tail -n1 || true)
  if [ -z "$npm_tgz" ]; then
    say "fetching $NPM_SPEC from the npm registry"
    npm_tgz="$dl/$(cd "$dl" && npm pack --silent "$NPM_SPEC" | tail -n1)"
  fi
  [ -s "$node_tgz" ] && [ -s "$npm_tgz" ] || die "npm pack left no tarball in $dl (node: '$node_tgz', npm: '$npm_tgz')"

  # What goes under /usr/local, laid out as the official image has it (global: the trap).
  stage=$(mktemp -d)
  trap 'rm -rf "$stage"' EXIT
  mkdir -p "$stage/usr/local/bin" "$stage/usr/local/lib/node_modules/npm"
  tar -xzf "$node_tgz" -C "$stage/usr/local" --strip-components=1 package/bin/node
  tar -xzf "$npm_tgz" -C "$stage/usr/local/lib/node_modules/npm" --strip-components=1
  ln -s ../lib/node_modules/npm/bin/npm-cli.js "$stage/usr/local/bin/npm"
  ln -s ../lib/node_modules/npm/bin/npx-cli.js "$stage/usr/local/bin/npx"
  local npm_version
  npm_version=$(basename "$npm_tgz" .tgz); npm_version=${npm_version#npm-}

  say "building $LOCAL_BASE: Debian bookworm (mmdebstrap, minbase), Node $NODE_VERSION, npm $npm_version"
  local tar="$CACHE_DIR/base-$NODE_VERSION.tar"
  # As debian:bookworm-slim is made: merged /usr without the usrmerge package (which would
  # bring perl), dpkg filters (no manuals, docs or translations) and apt settings that drop
  # downloaded packages and caches after each install (the "docker-clean" configuration the
  # Dockerfile's `rm -rf /var/lib/apt/lists/*` relies on), all kept in the image for later
  # apt-get runs; mmdebstrap's cleanup removes the lists and caches of this build.
  # (The apt settings are a file of the image only, not --aptopt: mmdebstrap's own apt runs
  # would read them too.)
  mkdir -p "$stage/etc/apt/apt.conf.d"
  local clean='"rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true";'
  printf '%s\n' \
    "DPkg::Post-Invoke { $clean };" \
    "APT::Update::Post-Invoke { $clean };" \
    'Dir::Cache::pkgcache "";' \
    'Dir::Cache::srcpkgcache "";' \
    'Acquire::Languages "none";' \
    'Apt::AutoRemove::SuggestsImportant "false";' \
    > "$stage/etc/apt/apt.conf.d/docker-clean"
  # eatmydata: dpkg without fsync while the tree is built (mmdebstrap's own hook; it removes
  # itself from the result).
  mmdebstrap --quiet --variant=minbase --format=tar \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --hook-dir=/usr/share/mmdebstrap/hooks/eatmydata \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    --customize-hook="sync-in '$stage' /" \
    --customize-hook='chroot "$1" /usr/local/bin/node --version' \
    --customize-hook='rm -f "$1"/var/cache/apt/*.bin "$1"/var/cache/debconf/*-old' \
    bookworm "$tar" \
    'deb http://deb.debian.org/debian bookworm main' \
    'deb http://deb.debian.org/debian bookworm-updates main' \
    'deb http://deb.debian.org/debian-security bookworm-security main'
  local changes=(
    'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
    "ENV NODE_VERSION=$NODE_VERSION"
    'CMD ["node"]'
  )
  if [ "$BUILDER" = podman ]; then
    local args=()
    for c in "${changes[@]}"; do args+=(--change "$c"); done
    podman import --quiet "${args[@]}" --message "policyctl local base: Debian bookworm minbase, Node $NODE_VERSION, npm $npm_version" "$tar" "$LOCAL_BASE" >/dev/null
  else
    local ctr
    ctr=$(buildah from scratch)
    buildah add --quiet "$ctr" "$tar" / >/dev/null
    buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --env "NODE_VERSION=$NODE_VERSION" --cmd '["node"]' "$ctr"
    buildah commit --quiet --rm "$ctr" "$LOCAL_BASE" >/dev/null
  fi
  rm -rf "$tar" "$stage"
}

t0=$(date +%s)
if [ -n "$BASE" ]; then
  image_exists "$BASE" || "$BUILDER" pull "$BASE" >/dev/null || die "cannot pull the base $BASE"
  say "base: $BASE (as given)"
elif image_exists "$DEFAULT_BASE"; then
  BASE=$DEFAULT_BASE; say "base: $BASE (local storage)"
elif image_exists "$LOCAL_BASE"; then
  BASE=$LOCAL_BASE; say "base: $BASE (built earlier from Debian packages and the npm registry, because $DEFAULT_BASE could not be pulled)"
elif "$BUILDER" pull "$DEFAULT_BASE" >/dev/null 2>&1; then
  BASE=$DEFAULT_BASE; say "base: $BASE (pulled)"
else
  say "cannot pull $DEFAULT_BASE (no registry serves it here): building an equivalent base"
  mkdir -p "$CACHE_DIR"
  build_local_base
  BASE=$LOCAL_BASE; say "base: $BASE (built in $(( $(date +%s) - t0 )) s)"
fi

# The machine's CA bundle for npm ci behind a TLS-intercepting proxy (not stored in the image).
secret=()
[ -s /etc/ssl/certs/ca-certificates.crt ] && secret=(--secret id=ca-certificates,src=/etc/ssl/certs/ca-certificates.crt)

t1=$(date +%s)
previous=$(image_id "$TAG")
build=(bud)
[ "$BUILDER" = podman ] && build=(build)
"$BUILDER" "${build[@]}" \
  --file deploy/Dockerfile \
  --ignorefile deploy/Dockerfile.dockerignore \
  --build-arg "BASE=$BASE" \
  --pull=never \
  --layers \
  --network host \
  "${secret[@]}" \
  --tag "$TAG" \
  . >&2
say "built $TAG in $(( $(date +%s) - t1 )) s (base $BASE)"
# The image this tag named before is no one's cache (its layers that are, stay): remove it
# and its untagged parents so that rebuilds do not pile up. Refused when something still uses it.
current=$(image_id "$TAG")
if [ -n "$previous" ] && [ "$previous" != "$current" ]; then "$BUILDER" rmi "$previous" >/dev/null 2>&1 || true; fi
echo "image $TAG: size $(image_size "$TAG") (base $BASE: $(image_size "$BASE"))"
