/*
** Preloaded after libtsan into the Lua of `make test-tsan`, never built
** into tidal. Two things the ThreadSanitizer run needs:
**
** 1. Debian's lua5.4 is built with _FORTIFY_SOURCE, so every Lua error and
**    every yield from a C function leaves through glibc's __longjmp_chk,
**    which ThreadSanitizer does not intercept (it intercepts setjmp,
**    longjmp, _longjmp and siglongjmp). Its shadow stack then keeps the
**    frames of every C function a yield or error jumped out of: it grows
**    by a few frames per yield, every allocation stores a deeper stack,
**    and the run slows down and grows by gigabytes (a runtime doing 3,000
**    file reads reached 3.7 GB; CI's run was killed). This __longjmp_chk
**    is longjmp (TSan's interceptor, which unwinds the shadow stack to the
**    setjmp) without the fortify check, which tests nothing of tidal's.
**
** 2. /bin/sh does not survive libtsan preloaded, so the preload must not
**    reach the shells and programs the specs start: LD_PRELOAD moves to
**    TIDAL_TSAN_PRELOAD at startup, and the lua5.4 the Makefile puts first
**    on PATH for the run puts it back for Lua children.
*/
#undef _FORTIFY_SOURCE
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdlib.h>

void __longjmp_chk(jmp_buf env, int val) __attribute__((noreturn));

void __longjmp_chk(jmp_buf env, int val) {
  longjmp(env, val);
}

__attribute__((constructor)) static void keep_children_plain(void) {
  const char *p = getenv("LD_PRELOAD");
  if (p != NULL && getenv("TIDAL_TSAN_PRELOAD") == NULL)
    setenv("TIDAL_TSAN_PRELOAD", p, 1);
  unsetenv("LD_PRELOAD");
}
