/*
** Preloaded after libtsan into the Lua of `make test-tsan`, never built
** into tidal.
**
** Debian's lua5.4 is built with _FORTIFY_SOURCE, so every Lua error and
** every yield from a C function leaves through glibc's __longjmp_chk,
** which ThreadSanitizer does not intercept (it intercepts setjmp, longjmp,
** _longjmp and siglongjmp). Its shadow stack then keeps the frames of
** every C function a yield or error jumped out of: it grows by a few
** frames per yield, every allocation stores a deeper stack, and the run
** slows down and grows by gigabytes (a runtime doing 3,000 file reads
** reached 3.7 GB). This __longjmp_chk is longjmp (TSan's interceptor,
** which unwinds the shadow stack to the setjmp) without the fortify
** check, which tests nothing of tidal's.
*/
#undef _FORTIFY_SOURCE
#include <setjmp.h>

void __longjmp_chk(jmp_buf env, int val) __attribute__((noreturn));

void __longjmp_chk(jmp_buf env, int val) {
  longjmp(env, val);
}
