#!/bin/sh
# SPDX-License-Identifier: MIT
# /init of the vkv.ko test VM, packed into the initramfs by run.sh.
# Loads the module, runs the tests, unloads it, checks dmesg and the taint
# flags, prints "vkv-vm: VERDICT PASS|FAIL" on the serial console and ends
# the VM through isa-debug-exit with status 0 (pass) or 1 (fail).
# The kernel command line may carry vkvplant=failtest (a planted failure).
export PATH=/bin
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mkdir -p /dev/shm && mount -t tmpfs tmpfs /dev/shm
exec 0</dev/console 1>/dev/console 2>&1

fail=0
say() { echo "vkv-vm: $*"; }
run() {
	name=$1
	shift
	say "RUN  $name"
	"$@"
	rc=$?
	if [ "$rc" -eq 0 ]; then
		say "PASS $name"
	else
		say "FAIL $name (rc $rc)"
		fail=1
	fi
}
finish() {
	if [ "$fail" -eq 0 ]; then
		say "VERDICT PASS"
		/bin/vm_exit 0
	else
		say "VERDICT FAIL"
		/bin/vm_exit 1
	fi
	poweroff -f
}

say "kernel $(uname -r), $(nproc) cpus, $(grep MemTotal /proc/meminfo)"
# Check's default per-test timeout is too short for emulated CPUs.
export CK_DEFAULT_TIMEOUT=240 VKV_LOG=quiet

if [ -e /brd.ko ]; then
	insmod /brd.ko rd_nr=1 rd_size=16384 && export VKV_TEST_BLOCKDEV=/dev/ram0
fi
run insmod insmod /vkv.ko
run devnode test -c /dev/vkv
[ "$fail" -eq 0 ] || finish
# The tests run in their own memory cgroup: everything the module allocates
# is charged to it (__GFP_ACCOUNT), so a page or struct it leaks stays
# charged there after they all exit, even when its own counters say zero.
cg=/sys/fs/cgroup
mount -t cgroup2 cgroup2 $cg && echo +memory >$cg/cgroup.subtree_control &&
	mkdir $cg/tests && echo $$ >$cg/tests/cgroup.procs ||
	{ say "FAIL memory cgroup setup"; fail=1; }

run test_kmod /bin/test_kmod
run test_kmod_backend /bin/test_kmod_backend
run test_kmod_compat /bin/test_kmod_compat
if [ -x /bin/test_core ]; then
	run core-kmod-2m env VKV_BACKEND=kmod VKV_TEST_PAGE=2097152 /bin/test_core
	run core-kmod-4k env VKV_BACKEND=kmod VKV_TEST_PAGE=4096 /bin/test_core
fi
# Tiering with the module loaded: the DRAM tier's buffers come from
# /dev/vkv (dram_tier_on_dev_vkv checks the module's counters), on the
# host and the kmod backends; NVMe files on tmpfs (buffered fallback).
if [ -x /bin/test_tier ]; then
	# 2 MiB physically contiguous buffers in a 768 MiB VM after the core
	# suites: compact first; and the NVMe file lives on tmpfs (RAM) here,
	# so it grows in small steps (256 MiB steps made VKV_IOC_ALLOC fail)
	sync
	echo 3 >/proc/sys/vm/drop_caches
	echo 1 >/proc/sys/vm/compact_memory
	run tier-host-2m env VKV_BACKEND=host VKV_TEST_PAGE=2097152 VKV_TEST_DIR=/tmp \
		VKV_DRAM_CHUNK=4M VKV_NVME_GROW=8M CK_RUN_CASE="round trips" /bin/test_tier
	echo 1 >/proc/sys/vm/compact_memory
	run tier-kmod-2m env VKV_BACKEND=kmod VKV_TEST_PAGE=2097152 VKV_TEST_DIR=/tmp \
		VKV_DRAM_CHUNK=4M VKV_NVME_GROW=8M CK_RUN_CASE="round trips" /bin/test_tier
fi
[ "${vkvplant:-}" = failtest ] && run planted-failure false

echo $$ >$cg/cgroup.procs
sync
echo 3 >/proc/sys/vm/drop_caches
say "cgroup of the tests: memory.current $(cat $cg/tests/memory.current) bytes"
grep -E '^(anon|file|kernel|slab) ' $cg/tests/memory.stat
# What stays charged is slab and the per-CPU charge caches (about 0.25 MiB
# after a clean run); one leaked page per freed buffer leaves about 5 MiB.
run no-charged-leak test "$(cat $cg/tests/memory.current)" -le 2097152
run counters-at-zero test "$(cat /sys/class/misc/vkv/bytes)" = 0 -a \
	"$(cat /sys/class/misc/vkv/buffers)" = 0
run rmmod rmmod vkv

dmesg >/tmp/dmesg
if grep -E 'WARNING:|BUG:|BUG |Oops|Call Trace|general protection|pagealloc: memory corruption|page allocation failure|Out of memory' /tmp/dmesg; then
	say "FAIL dmesg (lines above)"
	fail=1
else
	say "PASS dmesg"
fi
taint=$(cat /proc/sys/kernel/tainted)
# O (out-of-tree, 4096) and E (unsigned, 8192) are expected.
bad=$((taint & ~(4096 | 8192)))
if [ "$bad" -ne 0 ]; then
	say "FAIL taint $taint (unexpected bits $bad)"
	fail=1
else
	say "PASS taint $taint"
fi
[ "$fail" -eq 0 ] || tail -n 60 /tmp/dmesg
finish
