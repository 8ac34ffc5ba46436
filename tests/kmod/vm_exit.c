// SPDX-License-Identifier: MIT
/*
 * vm_exit.c - end the test VM with a status: writes it to qemu's
 * isa-debug-exit port (0xf4), which makes qemu exit with (status << 1) | 1.
 * Used as the last command of tests/kmod/init.sh.
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/io.h>

int main(int argc, char **argv)
{
	int code = argc > 1 ? atoi(argv[1]) : 1;

	if (ioperm(0xf4, 1, 1) != 0) {
		perror("vm_exit: ioperm");
		return 1;
	}
	outb((unsigned char)code, 0xf4);
	fprintf(stderr, "vm_exit: qemu did not exit (no isa-debug-exit?)\n");
	return 1;
}
