#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# `make install` into a scratch DESTDIR, then build and run a program
# against the installed library through pkg-config, and check that libvkv
# exports nothing but vkv_* (the version script and -fvisibility=hidden).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
make -s BUILD="$BUILD" install PREFIX=/usr DESTDIR="$tmp/root" >/dev/null

bad=$(nm -D --defined-only "$tmp/root/usr/lib/libvkv.so" | awk '$2 != "A" {print $3}' | grep -v '^vkv_' || true)
if [ -n "$bad" ]; then
	echo "libvkv.so exports symbols outside vkv_*: $bad" >&2
	exit 1
fi

cat >"$tmp/app.c" <<'C'
#include <stdio.h>
#include <vkv.h>
int main(void)
{
	struct vkv_ctx_config cc;
	struct vkv_region_config rc;
	vkv_ctx *ctx;
	vkv_region *r;
	uint32_t s;
	uint64_t len = 100;
	vkv_ctx_config_init(&cc);
	cc.backend = VKV_BACKEND_HOST;
	if (vkv_ctx_create(&cc, &ctx)) return 1;
	vkv_region_config_init(&rc);
	rc.layers = rc.kv_heads = 1; rc.head_dim = 64; rc.max_slots = 2; rc.max_context = 128;
	if (vkv_region_create(ctx, &rc, &r) || vkv_slot_alloc(r, 0, &s) ||
	    vkv_step(r, &s, &len, 1)) return 1;
	printf("vkv %s ok\n", vkv_version());
	return vkv_region_destroy(r) || vkv_ctx_destroy(ctx);
}
C
export PKG_CONFIG_SYSROOT_DIR="$tmp/root" PKG_CONFIG_LIBDIR="$tmp/root/usr/lib/pkgconfig"
# shellcheck disable=SC2046
cc -o "$tmp/app" "$tmp/app.c" $(pkg-config --cflags --libs vkv)
LD_LIBRARY_PATH="$tmp/root/usr/lib" VKV_STATS=0 "$tmp/app"
