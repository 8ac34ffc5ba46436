#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The vkv.ko test harness: for each Debian kernel whose headers are
# installed (or the releases given as arguments), build the module (with
# sparse when present), fetch the matching kernel image with
# `apt-get download` (never installed), pack an initramfs (busybox-static,
# vkv.ko, brd.ko, static test programs, tests/kmod/init.sh as /init), boot
# it under qemu (TCG, two NUMA nodes) with memory debugging, and read the
# verdict from the serial console and qemu's exit status (isa-debug-exit).
# The module is never loaded on this machine.
#
#   tests/kmod/run.sh                     every installed linux-headers-*-amd64
#   tests/kmod/run.sh 6.1.0-56-amd64      one kernel release
#
# Environment: VKV_KMOD_BUILD (output dir, default build-kmod-vm),
# VKV_KMOD_TIMEOUT (seconds per VM, 600), VKV_KMOD_MEM (guest RAM, 768M),
# VKV_KMOD_PLANT=failtest|warn|oops|nozero|leak (plant a failure to prove
# the harness catches it: a failing test, a WARN_ON in the module's load
# path, a NULL dereference in its ioctl path, pages handed out without
# zeroing, one page of every freed buffer kept by an extra reference).
# Exit status: 0 all kernels passed, 1 a test failed, 2 setup error.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
B=${VKV_KMOD_BUILD:-$ROOT/build-kmod-vm}
TIMEOUT=${VKV_KMOD_TIMEOUT:-600}
MEM=${VKV_KMOD_MEM:-768M}
PLANT=${VKV_KMOD_PLANT:-}
JOBS=${JOBS:-2}

log() { echo "kmod-vm: $*" >&2; }
die() {
	log "error: $*"
	exit 2
}

for tool in qemu-system-x86_64 cpio dpkg-deb apt-get make cc; do
	command -v "$tool" >/dev/null || die "$tool not found (tools/install-deps.sh)"
done
BUSYBOX=/bin/busybox
file -L "$BUSYBOX" 2>/dev/null | grep -q 'statically linked' ||
	ldd "$BUSYBOX" 2>&1 | grep -q 'not a dynamic' ||
	die "$BUSYBOX is not static (install busybox-static)"
case "$PLANT" in '' | failtest | warn | oops | nozero | leak) ;; *) die "unknown VKV_KMOD_PLANT=$PLANT" ;; esac

if [ $# -gt 0 ]; then
	KRELS=("$@")
else
	mapfile -t KRELS < <(find /usr/src -maxdepth 1 -name 'linux-headers-*-amd64' \
		! -name '*-cloud-amd64' ! -name '*-rt-amd64' -printf '%f\n' |
		sed 's/^linux-headers-//' | sort -V)
fi
[ ${#KRELS[@]} -gt 0 ] || die "no linux-headers-*-amd64 installed (tools/install-deps.sh)"
mkdir -p "$B/debs"

# Userspace, once for all kernels: static programs from the project build.
log "building the VM's programs"
make -C "$ROOT" -s -j"$JOBS" BUILD="$B/user" kmod-vm-progs >"$B/user-build.log" 2>&1 ||
	{ cat "$B/user-build.log" >&2; die "building the static test programs failed"; }
PROGS=$B/user/kmod-vm

# Build vkv.ko for $1 into $2 (a copy of the sources: one tree per kernel).
build_module() {
	local krel=$1 out=$2 kdir=/usr/src/linux-headers-$1 check=()
	[ -d "$kdir" ] || die "no headers for $krel (apt-get install linux-headers-$krel)"
	rm -rf "$out/src"
	mkdir -p "$out/src/include"
	cp -r "$ROOT/kmod" "$out/src/"
	cp -r "$ROOT/include/uapi" "$out/src/include/"
	case "$PLANT" in
	warn) sed -i 's/^\tret = vkv_buf_init();/\tWARN_ON(1);\n&/' "$out/src/kmod/vkv_main.c" ;;
	leak) sed -i 's/^\t\tvkv_put_pages(b->pages, b->nr_pages);/\t\tget_page(b->pages[0]);\n&/' \
		"$out/src/kmod/vkv_buf.c" ;;
	nozero) sed -i 's/GFP_HIGHUSER | __GFP_ZERO |/GFP_HIGHUSER |/' "$out/src/kmod/vkv_buf.c" ;;
	oops) sed -i 's/^\tswitch (cmd) {/\tif (cmd == VKV_IOC_INFO)\n\t\t*(volatile int *)0 = 1;\n&/' \
		"$out/src/kmod/vkv_main.c" ;;
	esac
	if [ -n "$PLANT" ] && [ "$PLANT" != failtest ] &&
		diff -rq "$ROOT/kmod" "$out/src/kmod" >/dev/null; then
		die "VKV_KMOD_PLANT=$PLANT no longer applies to kmod/"
	fi
	command -v sparse >/dev/null && check=(C=2)
	if ! make -C "$kdir" M="$out/src/kmod" "${check[@]}" W=1 modules \
		>"$out/module-build.log" 2>&1; then
		cat "$out/module-build.log" >&2
		return 1
	fi
	# Warnings, sparse's included, are errors (BTF is skipped: no vmlinux).
	if grep -E 'warning:|error:' "$out/module-build.log" >&2; then
		log "$krel: the module build has warnings"
		return 1
	fi
	[ ${#check[@]} -gt 0 ] || log "$krel: sparse not installed, not checked"
}

# The kernel image package of $1, unpacked under $2/image.
fetch_kernel() {
	local krel=$1 out=$2 deb
	if [ ! -f "$out/image/boot/vmlinuz-$krel" ]; then
		deb=$(find "$B/debs" -name "linux-image-${krel}_*.deb" -o \
			-name "linux-image-${krel}-unsigned_*.deb" | head -n1)
		if [ -z "$deb" ]; then
			(cd "$B/debs" && { apt-get download -q "linux-image-$krel" ||
				apt-get download -q "linux-image-$krel-unsigned"; }) \
				>"$out/download.log" 2>&1 ||
				{ cat "$out/download.log" >&2; return 1; }
			deb=$(find "$B/debs" -name "linux-image-${krel}*.deb" | head -n1)
		fi
		rm -rf "$out/image"
		dpkg-deb -x "$deb" "$out/image"
	fi
	[ -f "$out/image/boot/vmlinuz-$krel" ]
}

# Copy a module of the image (decompressed) to $3.
image_module() {
	local out=$1 name=$2 dst=$3 src
	src=$(find "$out/image/lib/modules" -name "$name.ko*" | head -n1)
	[ -n "$src" ] || return 1
	case "$src" in
	*.xz) xz -dc "$src" >"$dst" ;;
	*.zst) zstd -qdc "$src" >"$dst" ;;
	*) cp "$src" "$dst" ;;
	esac
}

pack_initramfs() {
	local out=$1 root=$1/root
	rm -rf "$root"
	mkdir -p "$root"/{bin,proc,sys,dev,tmp}
	cp "$BUSYBOX" "$root/bin/busybox"
	ln -s busybox "$root/bin/sh"
	cp "$ROOT/tests/kmod/init.sh" "$root/init"
	chmod 0755 "$root/init"
	cp "$PROGS/test_kmod" "$PROGS/test_kmod_backend" "$PROGS/test_core" \
		"$PROGS/test_kmod_compat" "$PROGS/test_tier" "$PROGS/vm_exit" "$root/bin/"
	cp "$out/src/kmod/vkv.ko" "$root/vkv.ko"
	image_module "$out" brd "$root/brd.ko" ||
		log "no brd.ko in the image: the O_DIRECT test will skip"
	(cd "$root" && find . | cpio -o -H newc --quiet) >"$out/initrd.cpio"
}

# Boot; prints the qemu status. Serial output goes to $out/serial.log.
boot() {
	local krel=$1 out=$2 rc=0 append half
	# Two NUMA nodes, each one socket with one CPU and half the memory (a
	# node boundary inside a socket makes the kernel warn at boot).
	half=$(($(numfmt --from=iec "$MEM") / 2))
	append="console=ttyS0 panic=-1 oops=panic slub_debug=FZPU page_poison=1"
	append+=" init_on_free=1 loglevel=4 mitigations=off"
	[ "$PLANT" = failtest ] && append+=" vkvplant=failtest"
	timeout --foreground -k 10 "$TIMEOUT" qemu-system-x86_64 \
		-accel tcg -cpu max -smp 2,sockets=2,cores=1,threads=1 -m "$MEM" \
		-nodefaults -no-reboot \
		-object "memory-backend-ram,id=m0,size=$half" \
		-object "memory-backend-ram,id=m1,size=$half" \
		-numa node,nodeid=0,cpus=0,memdev=m0 \
		-numa node,nodeid=1,cpus=1,memdev=m1 \
		-display none -monitor none -serial "file:$out/serial.raw" \
		-device isa-debug-exit,iobase=0xf4,iosize=0x04 \
		-kernel "$out/image/boot/vmlinuz-$krel" -initrd "$out/initrd.cpio" \
		-append "$append" </dev/null >"$out/qemu.log" 2>&1 || rc=$?
	tr -d '\r' <"$out/serial.raw" >"$out/serial.log"
	echo "$rc"
}

failed=0
for krel in "${KRELS[@]}"; do
	out=$B/$krel
	mkdir -p "$out"
	t0=$SECONDS
	build_module "$krel" "$out" || { log "$krel: FAIL (module build)"; failed=1; continue; }
	fetch_kernel "$krel" "$out" || { log "$krel: FAIL (no kernel image)"; failed=1; continue; }
	pack_initramfs "$out"
	log "$krel: booting (tcg, $MEM, timeout ${TIMEOUT}s)"
	rc=$(boot "$krel" "$out")
	grep '^vkv-vm: \(PASS\|FAIL\)' "$out/serial.log" | sed "s/^/  $krel: /" >&2 || true
	# isa-debug-exit: status s becomes (s << 1) | 1, so 1 is pass.
	if [ "$rc" = 1 ] && grep -q '^vkv-vm: VERDICT PASS' "$out/serial.log"; then
		log "$krel: PASS ($((SECONDS - t0))s)"
	else
		case "$rc" in
		124 | 137) why="timed out" ;;
		0) why="no verdict: the kernel panicked or rebooted" ;;
		3) why="tests failed" ;;
		*) why="qemu status $rc" ;;
		esac
		log "$krel: FAIL ($why; serial log $out/serial.log)"
		grep -v '^vkv-vm: \(PASS\|RUN\)' "$out/serial.log" | tail -n 80 | sed 's/^/    | /' >&2
		failed=1
	fi
done
exit "$failed"
