// SPDX-License-Identifier: MIT
/*
 * vkv_check.h - what every Check suite of vkv shares: assertions on vkv's
 * 0 / -errno convention that print vkv_strerror's detail when they fail,
 * and the suites' main().
 */
#ifndef VKV_CHECK_H
#define VKV_CHECK_H

#include <check.h>
#include <stdlib.h>

#include "vkv.h"

/* expr must return 0. */
#define OK(expr)                                                              \
	do {                                                                  \
		int _e = (expr);                                              \
		ck_assert_msg(_e == 0, "%s = %d (%s)", #expr, _e,             \
			      vkv_strerror(_e));                              \
	} while (0)

/* expr must fail with exactly `code`. */
#define FAILS(expr, code)                                                     \
	do {                                                                  \
		int _e = (expr);                                              \
		ck_assert_msg(_e == (code), "%s = %d, expected %d (%s)",      \
			      #expr, _e, (code), vkv_strerror(_e));           \
	} while (0)

/* Run a suite; the exit status says whether everything passed. */
static inline int vkv_check_run(Suite *s)
{
	SRunner *sr = srunner_create(s);
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

#endif /* VKV_CHECK_H */
