#!/usr/bin/env bash
# `make image-check`: build both images' `smoke` stages with podman on a local Debian base.
#
# No container registry is reachable from the machines this project is developed on, so the CUDA base is
# replaced by a bookworm rootfs made with debootstrap (its python3 is 3.11) and torch by the CPU build.
# The smoke stage renders test_input.json with the embedded engine inside the image; the build fails if
# that fails. `podman run` is not needed (some VMs refuse its rlimits). Needs root, podman, debootstrap.
set -euo pipefail
cd "$(dirname "$0")/.."

BASE=${IMAGE_CHECK_BASE:-localhost/avatar-base:bookworm}
MIRROR=${IMAGE_CHECK_MIRROR:-http://deb.debian.org/debian}
WHEELS=${IMAGE_CHECK_WHEELS:-/opt/wheels}           # holds torch-2.13.0+cpu; mounted read-only
TORCH_SPEC=${IMAGE_CHECK_TORCH_SPEC:-torch==2.13.0+cpu}
IMAGES=${IMAGE_CHECK_IMAGES:-sadtalker hq}
start=$(date +%s)

base_image() {
  if podman image exists "$BASE"; then
    echo "image-check: reusing base $BASE"
    return
  fi
  local root
  root=$(mktemp -d /var/tmp/avatar-base.XXXXXX)
  echo "image-check: debootstrap bookworm -> $BASE"
  debootstrap --variant=minbase bookworm "$root" "$MIRROR" >/dev/null
  tar -C "$root" -c . | podman import - "$BASE" >/dev/null
  rm -rf "$root"
}

ensure_wheels() {
  # the CPU torch wheel the builds install from (on this project's machines pip finds it on local disk)
  if ! ls "$WHEELS"/torch-2.13.0* >/dev/null 2>&1; then
    mkdir -p "$WHEELS"
    echo "image-check: downloading torch==2.13.0 into $WHEELS"
    python3 -m pip download --no-deps -q -d "$WHEELS" "torch==2.13.0"
  fi
}

build() {
  local image=$1 t0
  t0=$(date +%s)
  echo "image-check: building Dockerfile.$image --target smoke"
  podman build --isolation=chroot -f "Dockerfile.$image" --target smoke \
    --build-arg BASE_IMAGE="$BASE" \
    --build-arg FETCH_MODELS=0 \
    --build-arg TORCH_SPEC="$TORCH_SPEC" \
    --build-arg TORCH_INDEX_URL= \
    --build-arg PIP_FIND_LINKS="$WHEELS" \
    --build-arg BUILD_CA_BUNDLE=/etc/ssl/host-certs/ca-certificates.crt \
    -v /etc/ssl/certs:/etc/ssl/host-certs:ro \
    -v "$WHEELS:$WHEELS:ro" \
    -t "localhost/avatar-renderer:$image-smoke" .
  echo "image-check: $image smoke stage passed in $(( $(date +%s) - t0 )) s"
}

base_image
[ "${1:-}" = "--base-only" ] && exit 0
ensure_wheels
for image in $IMAGES; do
  build "$image"
done
echo "image-check: OK ($IMAGES) in $(( $(date +%s) - start )) s"
