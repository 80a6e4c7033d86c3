/*
** procs.c: what the process holds, for the io specs (part of the test-only
** module tidal.testhooks; never in tidal.core).
**
**   fds()       -> { [fd] = link target } of /proc/self/fd (the
**                  directory's own descriptor left out)
**   children()  -> { {pid = n, state = "S"|"Z"|...}, ... }: the children
**                  of every thread of this process (/proc/self/task/
**                  <tid>/children), zombies included
**   tcp_options(port) -> { nodelay =, keepalive =, keepidle = } of the
**                  connected TCP socket whose local port is port (nil if
**                  none): the options the kernel has, to check what
**                  tidal.net set
**
** Plain C, no libuv: it reads the kernel's view, not tidal's.
*/
#ifndef _DEFAULT_SOURCE
#define _DEFAULT_SOURCE
#endif

#include <dirent.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
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

static int port_of(int fd, int peer) {
  struct sockaddr_storage sa;
  socklen_t len = sizeof sa;
  int rc = peer ? getpeername(fd, (struct sockaddr *)&sa, &len)
                : getsockname(fd, (struct sockaddr *)&sa, &len);
  if (rc != 0) return -1;
  if (sa.ss_family == AF_INET) return ntohs(((struct sockaddr_in *)&sa)->sin_port);
  if (sa.ss_family == AF_INET6)
    return ntohs(((struct sockaddr_in6 *)&sa)->sin6_port);
  return -1;
}

static int l_tcp_options(lua_State *L) {
  int port = (int)luaL_checkinteger(L, 1);
  DIR *d = opendir("/proc/self/fd");
  struct dirent *e;
  int found = -1;
  if (d == NULL) return luaL_error(L, "tcp_options: cannot open /proc/self/fd");
  while (found < 0 && (e = readdir(d)) != NULL) {
    int fd, type = 0;
    socklen_t len = sizeof type;
    if (e->d_name[0] == '.') continue;
    fd = atoi(e->d_name);
    if (fd == dirfd(d)) continue;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0 ||
        type != SOCK_STREAM)
      continue;
    if (port_of(fd, 0) == port && port_of(fd, 1) > 0) found = fd;
  }
  closedir(d);
  if (found < 0) return 0;
  {
    int v = 0;
    socklen_t len = sizeof v;
    lua_createtable(L, 0, 3);
    if (getsockopt(found, IPPROTO_TCP, TCP_NODELAY, &v, &len) == 0) {
      lua_pushboolean(L, v != 0);
      lua_setfield(L, -2, "nodelay");
    }
    len = sizeof v;
    if (getsockopt(found, SOL_SOCKET, SO_KEEPALIVE, &v, &len) == 0) {
      lua_pushboolean(L, v != 0);
      lua_setfield(L, -2, "keepalive");
    }
    len = sizeof v;
    if (getsockopt(found, IPPROTO_TCP, TCP_KEEPIDLE, &v, &len) == 0) {
      lua_pushinteger(L, v);
      lua_setfield(L, -2, "keepidle");
    }
  }
  return 1;
}

/* Adds the functions to the module table on top. */
void tidal__procs_hooks(lua_State *L) {
  static const luaL_Reg funcs[] = {{"fds", l_fds},
                                   {"children", l_children},
                                   {"tcp_options", l_tcp_options},
                                   {NULL, NULL}};
  luaL_setfuncs(L, funcs, 0);
}
