/*
** test/xprobe.h: "tidal.XProbe", a test-only shareable handle type for the
** value layer (xprobe.c), in the tidal.testhooks module (hooks.c) and the
** fuzzer, which register it themselves. Never linked into tidal.core.
**
** May use: xfer only.
*/
#ifndef TIDAL_XPROBE_H
#define TIDAL_XPROBE_H

#include "xfer/xfer.h"

extern const tidal_xtype tidal__xprobe_xtype;
void tidal__xprobe_new(lua_State *L, lua_Integer value); /* pushes a probe */
long tidal__xprobe_live(void); /* probes alive in the process */

#endif
