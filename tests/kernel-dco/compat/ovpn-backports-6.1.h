/* SPDX-License-Identifier: MIT */
/* Forced include for building OpenVPN/ovpn-backports against Debian's 6.1 headers (tests/kernel-dco/11-build-ovpn.sh):
 * the backport's compat layer uses container_of_safe(), which this kernel generation does not provide. */
#include <linux/err.h>
#include <linux/stddef.h>
#ifndef container_of_safe
#define container_of_safe(ptr, type, member) ({ \
	void *__cos_p = (void *)(ptr); \
	IS_ERR_OR_NULL(__cos_p) ? ERR_CAST(__cos_p) : ((type *)(__cos_p - offsetof(type, member))); })
#endif
