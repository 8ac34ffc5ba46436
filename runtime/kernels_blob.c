// SPDX-License-Identifier: MIT
/*
 * kernels_blob.c - the fatbins of kernels/ embedded in libvkv.
 *
 * The build compiles each kernels/<name>.cu into $(BUILD)/kernels/<name>.fatbin
 * (mk/kernels.mk) and this file pulls the bytes in with the assembler's
 * .incbin, so the library carries its kernels and loads them with
 * cuModuleLoadData from memory: no file to install or find at run time, no
 * generated C array to compile. VKV_FATBIN_DIR comes from the build.
 */
#include "kernels.h"

#ifndef VKV_FATBIN_DIR
// cppcheck-suppress preprocessorErrorDirective
#error "VKV_FATBIN_DIR must name the directory of the fatbins"
#endif

/* Defines hidden symbols `sym` and `sym_end` around the file's bytes,
 * aligned for the driver's fatbin header. */
#define VKV_INCBIN(sym, file)                                                \
	__asm__(".pushsection .rodata.vkv_fatbin, \"a\"\n"                   \
		".balign 64\n"                                               \
		".globl " #sym "\n"                                          \
		".hidden " #sym "\n"                                         \
		".type " #sym ", %object\n" #sym ":\n"                       \
		".incbin \"" VKV_FATBIN_DIR "/" file "\"\n"                  \
		".globl " #sym "_end\n"                                      \
		".hidden " #sym "_end\n" #sym "_end:\n"                      \
		".size " #sym ", " #sym "_end - " #sym "\n"                  \
		".popsection\n")

VKV_INCBIN(vkv__fatbin_gather, "gather.fatbin");
VKV_INCBIN(vkv__fatbin_attn_decode, "attn_decode.fatbin");
