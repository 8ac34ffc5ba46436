#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Install the Debian packages vkv needs to build and test, when missing.
# As root it runs apt-get itself; otherwise it prints the exact line to run.
set -euo pipefail

# One package per line; parts append theirs here.
PKGS=(
	build-essential
	pkg-config
	check
	libsubunit-dev
	libnuma-dev
	liburing-dev
	valgrind
	cppcheck
	fio
	tmux
	clang
	libclang-rt-14-dev
	prometheus
	python3
	qemu-system-x86
	linux-headers-amd64
	linux-headers-6.12-amd64
	busybox-static
	cpio
	sparse
	gcc-multilib
	python3-torch
	python3-pytest
	python3-pip
)

missing=()
for p in "${PKGS[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
		missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
	echo "vkv: installing ${missing[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
	echo "vkv: missing packages; run:" >&2
	echo "  sudo apt-get install -y ${missing[*]}" >&2
	exit 1
fi
