// SPDX-License-Identifier: MIT
/*
 * stats_workload.c - a small libvkv process for vkvstat's shell tests.
 *
 * It commits real memory through the public API on the host backend (a
 * region, two slots, a few steps), so that libvkv publishes a real stats
 * segment, then prints "ready" and holds everything until SIGTERM/SIGINT or
 * until the given number of seconds has passed. It is what `vkvstat` is
 * pointed at when `vkvbench serve` is not there, and it keeps the tests
 * of the tool independent of the demo's pace.
 *
 *   stats_workload [SECONDS]    (default 60)
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "vkv.h"

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static int run(unsigned seconds)
{
	struct vkv_ctx_config cc;
	struct vkv_region_config rc;
	uint32_t slots[2];
	uint64_t lens[2] = { 100, 300 };
	vkv_region *r = NULL;
	vkv_ctx *ctx = NULL;
	int err;

	vkv_ctx_config_init(&cc);
	cc.backend = VKV_BACKEND_HOST;
	vkv_region_config_init(&rc);
	rc.layers = 2;
	rc.kv_heads = 2;
	rc.head_dim = 64;
	rc.elem_size = 2;
	rc.max_slots = 4;
	rc.max_context = 4096;
	if ((err = vkv_ctx_create(&cc, &ctx)) ||
	    (err = vkv_region_create(ctx, &rc, &r)) ||
	    (err = vkv_slot_alloc(r, 0, &slots[0])) ||
	    (err = vkv_slot_alloc(r, 0, &slots[1])))
		goto out;
	for (int i = 0; i < 8 && !err; i++) {
		lens[0] += 16;
		lens[1] += 16;
		err = vkv_step(r, slots, lens, 2);
	}
	if (err)
		goto out;
	printf("ready %d\n", getpid());
	fflush(stdout);
	for (unsigned s = 0; s < seconds * 10 && !stop; s++)
		usleep(100000);
out:
	if (err)
		fprintf(stderr, "stats_workload: %s\n", vkv_strerror(err));
	if (r)
		vkv_region_destroy(r);
	if (ctx)
		vkv_ctx_destroy(ctx);
	return err ? 1 : 0;
}

int main(int argc, char **argv)
{
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	return run(argc > 1 ? (unsigned)atoi(argv[1]) : 60);
}
