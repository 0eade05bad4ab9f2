#!/usr/bin/env bash
# Fetches NVIDIA's PTX assembler (ptxas, from Debian's non-free package nvidia-cuda-toolkit) into DEST/ptxas, for the
# test that assembles every GPU kernel for SM 9.0 (export LXT_PTXAS=DEST/ptxas). Nothing is installed and the system's
# package sources are left as they are: the package is downloaded through a list of sources of its own, the system's
# own with the non-free component, and only ptxas is unpacked from it. Idempotent.
set -euo pipefail
dest="${1:?usage: scripts/fetch-ptxas.sh DEST}"
[[ -x "$dest/ptxas" ]] && exit 0
sources=/etc/apt/sources.list.d/debian.sources
[[ -r "$sources" ]] || { echo "fetch-ptxas: no $sources to take Debian's mirror from" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/parts" "$work/lists/partial" "$work/archives/partial" "$dest"
sed 's/^Components: .*/Components: non-free/' "$sources" > "$work/parts/non-free.sources"
apt=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$work/parts" -o "Dir::State::Lists=$work/lists"
     -o "Dir::Cache=$work" -o "Dir::Cache::Archives=$work/archives" -o APT::Sandbox::User=root)
apt-get "${apt[@]}" update -qq
(cd "$work" && apt-get "${apt[@]}" download -qq nvidia-cuda-toolkit)
dpkg -x "$work"/nvidia-cuda-toolkit_*.deb "$work/unpacked"
# copy, then rename: a stopped run never leaves a partial ptxas behind
cp "$work/unpacked/usr/bin/ptxas" "$dest/ptxas.tmp"
mv -f "$dest/ptxas.tmp" "$dest/ptxas"
"$dest/ptxas" --version | tail -n 1
