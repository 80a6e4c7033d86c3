/*
** procs.c: what the process holds, for the io specs (part of the test-only
** module tidal.testhooks; never in tidal.core).
**
**   fds()       -> { [fd] = link target } of /proc/self/fd (the
**                  directory's own descriptor left out)
**   children()  -> { {pid = n, state = "S"|"Z"|...}, ... }: the children
**                  of every thread of this process (/proc/self/task/
**                  <tid>/children), zombies included
**
** Plain C, no libuv: it reads the kernel's view, not tidal's.
*/
#ifndef _DEFAULT_SOURCE
#define _DEFAULT_SOURCE
#endif

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>

static int l_fds(lua_State *L) {
  DIR *d = opendir("/proc/self/fd");
  struct dirent *e;
  char path[64], target[4096];
  if (d == NULL) return luaL_error(L, "fds: cannot open /proc/self/fd");
  lua_newtable(L);
  while ((e = readdir(d)) != NULL) {
    char *end;
    long fd = strtol(e->d_name, &end, 10);
    ssize_t n;
    if (*end != '\0' || end == e->d_name || fd == dirfd(d)) continue;
    snprintf(path, sizeof path, "/proc/self/fd/%ld", fd);
    n = readlink(path, target, sizeof target - 1);
    if (n < 0) continue; /* closed meanwhile */
    lua_pushlstring(L, target, (size_t)n);
    lua_rawseti(L, -2, fd);
  }
  closedir(d);
  return 1;
}

/* Appends the children listed in file path to the table on top. */
static void add_children(lua_State *L, const char *path) {
  FILE *f = fopen(path, "r");
  long pid;
  if (f == NULL) return;
  while (fscanf(f, "%ld", &pid) == 1) {
    char spath[64], buf[512], *p;
    FILE *sf;
    size_t n;
    snprintf(spath, sizeof spath, "/proc/%ld/stat", pid);
    lua_createtable(L, 0, 2);
    lua_pushinteger(L, pid);
    lua_setfield(L, -2, "pid");
    if ((sf = fopen(spath, "r")) != NULL) {
      n = fread(buf, 1, sizeof buf - 1, sf);
      fclose(sf);
      buf[n] = '\0';
      p = strrchr(buf, ')'); /* "pid (comm) S ..." */
      if (p != NULL && p[1] == ' ' && p[2] != '\0') {
        lua_pushlstring(L, p + 2, 1);
        lua_setfield(L, -2, "state");
      }
    }
    lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
  }
  fclose(f);
}

static int l_children(lua_State *L) {
  DIR *d = opendir("/proc/self/task");
  struct dirent *e;
  char path[64];
  if (d == NULL) return luaL_error(L, "children: cannot open /proc/self/task");
  lua_newtable(L);
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.') continue;
    snprintf(path, sizeof path, "/proc/self/task/%.20s/children", e->d_name);
    add_children(L, path);
  }
  closedir(d);
  return 1;
}

/* Adds the functions to the module table on top. */
void tidal__procs_hooks(lua_State *L) {
  static const luaL_Reg funcs[] = {
      {"fds", l_fds}, {"children", l_children}, {NULL, NULL}};
  luaL_setfuncs(L, funcs, 0);
}
