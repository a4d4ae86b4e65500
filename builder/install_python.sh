#!/bin/sh
# Install CPython 3.11 (+ venv) on the image's base: Debian bookworm ships it as python3, Ubuntu 22.04
# (the CUDA runtime images) only as a release candidate, so there it comes from the deadsnakes PPA.
set -eu
export DEBIAN_FRONTEND=noninteractive
. /etc/os-release
apt-get update -qq
if [ "${ID}" = "ubuntu" ]; then
  apt-get install -y -qq --no-install-recommends ca-certificates curl gnupg
  # Launchpad PPA for deadsnakes
  curl -fsSL "https://keyserver.ubuntu.com/pks/lookup?op=get&search=0xF23C5A6CF475977595C89F51BA6932366A755776" \
    | gpg --dearmor -o /usr/share/keyrings/deadsnakes.gpg
  echo "deb [signed-by=/usr/share/keyrings/deadsnakes.gpg] https://ppa.launchpadcontent.net/deadsnakes/ppa/ubuntu ${VERSION_CODENAME} main" \
    > /etc/apt/sources.list.d/deadsnakes.list
  apt-get update -qq
  apt-get purge -y -qq curl gnupg && apt-get autoremove -y -qq
fi
apt-get install -y -qq --no-install-recommends python3.11 python3.11-venv libgomp1 ca-certificates
rm -rf /var/lib/apt/lists/*
python3.11 --version
