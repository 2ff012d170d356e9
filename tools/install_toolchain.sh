#!/usr/bin/env bash
# The compilers the tests use to rebuild reader images and build small readers of their own:
# gcc with i386 multilib, clang and lld, from Debian's packages (root, or sudo when present);
# then the distribution vDSO samples the real-vDSO tests and the benchmark run on
# (tools/fetch_vdso_samples.sh: a no-op once they are there).
set -euo pipefail
pkgs=(gcc gcc-multilib clang lld binutils)
if ! dpkg -s "${pkgs[@]}" >/dev/null 2>&1; then
  as_root=()
  [ "$(id -u)" = 0 ] || as_root=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${as_root[@]}" apt-get update -qq
  "${as_root[@]}" apt-get install -y -qq "${pkgs[@]}" >/dev/null
fi
bash "$(dirname "$0")/fetch_vdso_samples.sh"
