#!/usr/bin/env bash
# Fetch the distribution vDSO samples the tests and the benchmark use: vdso64.so and
# vdso32.so of Debian's 6.1 and 6.12 cloud-amd64 kernels, from their debug packages.
#
#   bash tools/fetch_vdso_samples.sh [DEST]    # DEST: $VDSOFUZZ_VDSO_SAMPLES, else ~/vdso-samples
#
# Each kernel goes to DEST/deb-<kernel version>/vdso{64,32}.so (e.g. deb-6.1.192/). A kernel
# series that already has both files there is left alone, so a second run does nothing and
# needs no network. The package versions the README's sha256s were checked against are
# preferred; when the archive no longer has one, the newest package of the same series is
# taken instead (and said so). Only the two images are extracted; the .deb (~300 MB each) is
# deleted. apt verifies the packages against the archive's signed index; the sha256s printed
# at the end are for comparing with the README.
set -euo pipefail

dest=${1:-${VDSOFUZZ_VDSO_SAMPLES:-$HOME/vdso-samples}}
# series -> (preferred package, package-name pattern of the series for the fallback)
series=(6.1 6.12)
declare -A preferred=(
  [6.1]=linux-image-6.1.0-56-cloud-amd64-dbg
  [6.12]=linux-image-6.12.117+deb12-cloud-amd64-dbg
)
declare -A pattern=(
  [6.1]='^linux-image-6\.1\.0-[0-9]+-cloud-amd64-dbg$'
  [6.12]='^linux-image-6\.12\.[0-9]+\+deb[0-9]+-cloud-amd64-dbg$'
)
# sha256s of the images checked by hand (README, "Real kernel vDSOs").
declare -A checked=(
  [deb-6.1.192/vdso64.so]=12114f93a2a39c0a2b5639f7e6ac170159831ae9b6dddedf981f51a5ccd07135
  [deb-6.1.192/vdso32.so]=ca419734d3c8780504704c3be0a5ae46bd37b3c61bd521a640238096cebf288e
  [deb-6.12.117/vdso64.so]=0dc8c6d37e96444eaab177e3e509521fb77f245ce7ca0b08a82114973f128a13
  [deb-6.12.117/vdso32.so]=514613aa6b79be5c85fbb8616da1c8071e23c52ac6d486896e8c721cc6666d80
)

as_root=()
[ "$(id -u)" = 0 ] || as_root=(sudo)

have_series() { # is there a deb-<series>.N/ with both images?
  local d
  for d in "$dest"/deb-"$1".*/; do
    [[ -f $d/vdso64.so && -f $d/vdso32.so ]] || continue
    # deb-6.1.x must not count for 6.12: the part after the series is one number
    [[ $(basename "$d") =~ ^deb-${1//./\\.}\.[0-9]+$ ]] && return 0
  done
  return 1
}

updated=0
cleanup=() # work directories (a failed run leaves no 300 MB package behind)
trap 'rm -rf "${cleanup[@]}"' EXIT
candidate() { # the package's candidate version, "" when apt does not know it
  apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print ($2 == "(none)" ? "" : $2)}'
}
pick() { # the package to fetch for a series
  local s=$1 pkg=${preferred[$1]}
  if [ -z "$(candidate "$pkg")" ] && [ $updated = 0 ]; then
    DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get update -qq >&2
    updated=1
  fi
  if [ -n "$(candidate "$pkg")" ]; then
    echo "$pkg"
    return
  fi
  pkg=$(apt-cache pkgnames linux-image- | grep -E "${pattern[$s]}" | sort -V | tail -n 1)
  if [ -z "$pkg" ]; then
    echo "fetch_vdso_samples: no $s cloud-amd64 debug package in apt's sources" >&2
    exit 1
  fi
  echo "fetch_vdso_samples: ${preferred[$s]} is gone; taking $pkg instead" >&2
  echo "$pkg"
}

fetch() { # download one series' package, keep its two images, delete the package
  local s=$1 pkg work deb dir version
  pkg=$(pick "$s")
  work=$(mktemp -d "${TMPDIR:-/tmp}/vdso-samples.XXXXXX")
  chmod 755 "$work" # apt downloads as its own user when it can
  cleanup+=("$work")
  (cd "$work" && apt-get download -qq "$pkg")
  deb=$(echo "$work"/*.deb)
  # The upstream kernel version, from the package's (6.1.192-2 -> 6.1.192).
  version=$(dpkg-deb -f "$deb" Version)
  version=${version%%-*}
  dpkg-deb --fsys-tarfile "$deb" |
    tar -x -C "$work" --wildcards './usr/lib/debug/lib/modules/*/vdso/vdso64.so' \
      './usr/lib/debug/lib/modules/*/vdso/vdso32.so'
  rm -f "$deb"
  dir="$dest/deb-$version"
  mkdir -p "$dir"
  for f in vdso64.so vdso32.so; do
    install -m 0644 "$work"/usr/lib/debug/lib/modules/*/vdso/"$f" "$dir/$f.tmp"
    mv "$dir/$f.tmp" "$dir/$f"
  done
  echo "fetch_vdso_samples: $pkg -> $dir" >&2
}

for s in "${series[@]}"; do
  have_series "$s" || fetch "$s"
done

cd "$dest"
for f in deb-*/vdso*.so; do
  sum=$(sha256sum "$f" | cut -d' ' -f1)
  note=""
  if [ -n "${checked[$f]:-}" ]; then
    [ "${checked[$f]}" = "$sum" ] && note="  (as checked)" || note="  (DIFFERS from the README)"
  fi
  echo "$sum  $dest/$f$note"
done
