/*
** fs.c: tidal.fs's path functions (read_file, write_file, stat, lstat,
** mkdir, readdir, remove, rename), registered in tidal.core as core._fs_*
** and wrapped by lua/tidal/fs.lua (which checks the options). tidal.fs.open
** and the File object are in file.c.
**
** Each function is one job on libuv's thread pool (fsreq.c), so it costs
** one pool round trip however many syscalls it makes, and never blocks the
** loop. Every descriptor a job opens is opened with O_CLOEXEC and closed
** inside the job, so a cancelled call leaks nothing; data to write is
** copied into the job (a pool thread never reads Lua memory).
*/
#include "fsreq.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ERR (-errno) /* libuv's codes are negated errno values on unix */

/* ------------------------------------------------------------ helpers */

static int xclose(int fd) {
  return close(fd) == 0 || errno == EINTR ? 0 : ERR;
}

static int write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t k = write(fd, p, n);
    if (k < 0) {
      if (errno == EINTR) continue;
      return ERR;
    }
    p += k;
    n -= (size_t)k;
  }
  return 0;
}

/* "nil, err" for request r's failure, with err.path (and err.to); r's box
** is at index 1. */
static int fail(lua_State *L, io_fsreq *r, const char *fname) {
  int rc = r->result;
  if (r->path2 != NULL) {
    io__fail(L, rc, fname, "%s -> %s", r->path, r->path2);
    io__error_field(L, "path", r->path);
    io__error_field(L, "to", r->path2);
  } else {
    io__fail(L, rc, fname, "%s", r->path);
    io__error_field(L, "path", r->path);
  }
  io__fsreq_done(L, 1);
  return 2;
}

/* Starts r, whose box is on top, and parks t on it. */
static int start(lua_State *L, tidal_task *t, io_fsreq *r,
                 const tidal_waitop *op, lua_KFunction k) {
  int rc;
  lua_replace(L, 1);
  lua_settop(L, 1); /* the box, at 1 */
  rc = io__fsreq_start(r);
  if (rc != 0) {
    r->result = rc;
    return fail(L, r, op->name);
  }
  return io__fsreq_park(L, t, r, op, k);
}

static int true_k(lua_State *L, int status, lua_KContext kc) {
  tidal_task *t = (tidal_task *)kc;
  io_fsreq *r = io__fsreq_take(L, t);
  (void)status;
  if (r->result < 0) return fail(L, r, (const char *)r->obj);
  io__fsreq_done(L, 1);
  lua_pushboolean(L, 1);
  return 1;
}

/* ---------------------------------------------------------- read_file */

static void job_read_file(io_fsreq *r) {
  struct stat st;
  size_t cap = 64 * 1024;
  int fd = open(r->path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    r->result = ERR;
    return;
  }
  if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0) {
    if ((uintmax_t)st.st_size > r->max) {
      r->result = UV_EFBIG;
      close(fd);
      return;
    }
    cap = (size_t)st.st_size + 1; /* + 1: the read that sees EOF */
  }
  for (;;) {
    ssize_t n;
    if (r->buf.cap - r->buf.len == 0 &&
        tidal__buf_grow(&r->buf, r->buf.cap ? r->buf.cap : cap) != 0) {
      r->result = UV_ENOMEM;
      break;
    }
    n = read(fd, r->buf.data + r->buf.len, r->buf.cap - r->buf.len);
    if (n < 0) {
      if (errno == EINTR) continue;
      r->result = ERR;
      break;
    }
    if (n == 0) break;
    r->buf.len += (size_t)n;
    if (r->buf.len > r->max) {
      r->result = UV_EFBIG;
      break;
    }
  }
  close(fd);
}

static int read_file_k(lua_State *L, int status, lua_KContext kc) {
  tidal_task *t = (tidal_task *)kc;
  io_fsreq *r = io__fsreq_take(L, t);
  (void)status;
  if (r->result == UV_EFBIG && r->max != SIZE_MAX) {
    io__fail_kind(L, "too_large",
                  "tidal.fs.read_file: %s: larger than max (%I bytes)",
                  r->path, (lua_Integer)r->max);
    io__error_field(L, "path", r->path);
    io__fsreq_done(L, 1);
    return 2;
  }
  if (r->result < 0) return fail(L, r, "tidal.fs.read_file");
  lua_pushlstring(L, r->buf.data ? r->buf.data : "", r->buf.len);
  io__fsreq_done(L, 1);
  return 1;
}

static const tidal_waitop read_file_op = {"tidal.fs.read_file",
                                          io__fsreq_cancel, NULL};

/* core._fs_read_file(path, max) */
static int l_read_file(lua_State *L) {
  const char *fname = "tidal.fs.read_file";
  const char *path = io__path_check(L, 1, fname);
  lua_Integer max = luaL_optinteger(L, 2, -1);
  tidal_task *t = tidal__wait_begin(L, fname);
  io_worker *iw = io__worker_check(L, fname);
  io_fsreq *r = io__fsreq_push(L, iw, job_read_file, fname, path, NULL);
  r->max = max < 0 ? SIZE_MAX : (size_t)max;
  return start(L, t, r, &read_file_op, read_file_k);
}

/* --------------------------------------------------------- write_file */

enum { WF_ATOMIC = 1, WF_APPEND = 2, WF_SYNC = 4 };

/* fsync the directory that holds path (after a rename into it) */
static int sync_dir(const char *path) {
  const char *slash = strrchr(path, '/');
  char dir[PATH_MAX];
  int fd, rc = 0;
  if (slash == NULL) {
    strcpy(dir, ".");
  } else {
    size_t n = slash == path ? 1 : (size_t)(slash - path);
    if (n >= sizeof dir) return UV_ENAMETOOLONG;
    memcpy(dir, path, n);
    dir[n] = '\0';
  }
  fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ERR;
  if (fsync(fd) != 0 && errno != EINVAL) rc = ERR; /* (some fs refuse) */
  close(fd);
  return rc;
}

/* path = final path, path2 = temporary path (atomic) */
static void job_write_file(io_fsreq *r) {
  int atomic = r->flags & WF_ATOMIC, rc;
  const char *target = atomic ? r->path2 : r->path;
  int oflags = O_WRONLY | O_CREAT | O_CLOEXEC |
               (atomic                   ? O_EXCL
                : r->flags & WF_APPEND   ? O_APPEND
                                         : O_TRUNC);
  int fd = open(target, oflags, r->mode);
  if (fd < 0) {
    r->result = ERR;
    return;
  }
  rc = write_all(fd, r->buf.data, r->buf.len);
  if (rc == 0 && (r->flags & WF_SYNC) && fsync(fd) != 0) rc = ERR;
  if (xclose(fd) != 0 && rc == 0) rc = ERR;
  if (rc == 0 && atomic) {
    if (rename(r->path2, r->path) != 0)
      rc = ERR;
    else
      rc = sync_dir(r->path);
    if (rc == 0) atomic = 0; /* nothing to remove */
  }
  if (rc != 0 && atomic) unlink(r->path2);
  r->result = rc;
}

static const tidal_waitop write_file_op = {"tidal.fs.write_file",
                                           io__fsreq_cancel, NULL};

/* core._fs_write_file(path, data, atomic, append, mode, sync) */
static int l_write_file(lua_State *L) {
  static atomic_uint tmp_counter;
  const char *fname = "tidal.fs.write_file";
  const char *path = io__path_check(L, 1, fname);
  size_t len;
  const char *data = luaL_checklstring(L, 2, &len);
  int flags = (lua_toboolean(L, 3) ? WF_ATOMIC : 0) |
              (lua_toboolean(L, 4) ? WF_APPEND : 0) |
              (lua_toboolean(L, 6) ? WF_SYNC : 0);
  int mode = (int)luaL_optinteger(L, 5, 0666);
  tidal_task *t = tidal__wait_begin(L, fname);
  io_worker *iw = io__worker_check(L, fname);
  const char *tmp = NULL;
  io_fsreq *r;
  if (flags & WF_ATOMIC)
    tmp = lua_pushfstring(L, "%s.tmp-%d-%d", path, (int)getpid(),
                          (int)atomic_fetch_add(&tmp_counter, 1));
  r = io__fsreq_push(L, iw, job_write_file, fname, path, tmp);
  r->flags = flags;
  r->mode = mode;
  r->obj = (void *)fname;
  if (len > 0 && tidal__buf_add(&r->buf, data, len) != 0)
    return luaL_error(L, "%s: not enough memory", fname); /* (box frees r) */
  return start(L, t, r, &write_file_op, true_k);
}

/* ----------------------------------------------------------- stat */

static const char *type_name(mode_t m) {
  if (S_ISREG(m)) return "file";
  if (S_ISDIR(m)) return "directory";
  if (S_ISLNK(m)) return "link";
  if (S_ISFIFO(m)) return "fifo";
  if (S_ISSOCK(m)) return "socket";
  if (S_ISCHR(m)) return "char";
  if (S_ISBLK(m)) return "block";
  return "unknown";
}

static void set_time(lua_State *L, const char *k, const struct timespec *ts) {
  lua_pushnumber(L, (lua_Number)ts->tv_sec + (lua_Number)ts->tv_nsec / 1e9);
  lua_setfield(L, -2, k);
}

static void set_int(lua_State *L, const char *k, lua_Integer v) {
  lua_pushinteger(L, v);
  lua_setfield(L, -2, k);
}

void io__push_stat(lua_State *L, const struct stat *st) {
  lua_createtable(L, 0, 12);
  lua_pushstring(L, type_name(st->st_mode));
  lua_setfield(L, -2, "type");
  set_int(L, "size", (lua_Integer)st->st_size);
  set_int(L, "mode", (lua_Integer)(st->st_mode & 07777));
  set_time(L, "mtime", &st->st_mtim);
  set_time(L, "atime", &st->st_atim);
  set_time(L, "ctime", &st->st_ctim);
  set_int(L, "nlink", (lua_Integer)st->st_nlink);
  set_int(L, "uid", (lua_Integer)st->st_uid);
  set_int(L, "gid", (lua_Integer)st->st_gid);
  set_int(L, "ino", (lua_Integer)st->st_ino);
  set_int(L, "dev", (lua_Integer)st->st_dev);
  set_int(L, "blocks", (lua_Integer)st->st_blocks);
}

static void job_stat(io_fsreq *r) {
  int rc = r->flags ? lstat(r->path, &r->st) : stat(r->path, &r->st);
  r->result = rc == 0 ? 0 : ERR;
}

static int stat_k(lua_State *L, int status, lua_KContext kc) {
  tidal_task *t = (tidal_task *)kc;
  io_fsreq *r = io__fsreq_take(L, t);
  (void)status;
  if (r->result < 0) return fail(L, r, (const char *)r->obj);
  io__push_stat(L, &r->st);
  io__fsreq_done(L, 1);
  return 1;
}

static const tidal_waitop stat_op = {"tidal.fs.stat", io__fsreq_cancel, NULL};
static const tidal_waitop lstat_op = {"tidal.fs.lstat", io__fsreq_cancel, NULL};

static int do_stat(lua_State *L, const tidal_waitop *op, int link) {
  const char *path = io__path_check(L, 1, op->name);
  tidal_task *t = tidal__wait_begin(L, op->name);
  io_worker *iw = io__worker_check(L, op->name);
  io_fsreq *r = io__fsreq_push(L, iw, job_stat, op->name, path, NULL);
  r->flags = link;
  r->obj = (void *)op->name;
  return start(L, t, r, op, stat_k);
}

static int l_stat(lua_State *L) {
  return do_stat(L, &stat_op, 0);
}

static int l_lstat(lua_State *L) {
  return do_stat(L, &lstat_op, 1);
}

/* ------------------------------------------------------------- mkdir */

/* mkdir one directory that may exist already (as a directory); a parent
** that exists as something else is ENOTDIR */
static int mkdir_exist_ok(const char *path, int mode, int parent) {
  struct stat st;
  if (mkdir(path, (mode_t)mode) == 0) return 0;
  if (errno != EEXIST) return ERR;
  if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) return 0;
  return parent ? UV_ENOTDIR : UV_EEXIST;
}

static void job_mkdir(io_fsreq *r) {
  char *p = r->path, *s;
  if (!r->flags) {
    r->result = mkdir(p, (mode_t)r->mode) == 0 ? 0 : ERR;
    return;
  }
  /* parents, created with the default mode (as mkdir -p does), then the
  ** directory itself with the mode asked for */
  for (s = p + 1; *s; s++) {
    int rc;
    if (*s != '/' || s[-1] == '/') continue;
    *s = '\0';
    rc = mkdir_exist_ok(p, 0777, 1);
    *s = '/';
    if (rc != 0) {
      r->result = rc;
      return;
    }
  }
  r->result = mkdir_exist_ok(p, r->mode, 0);
}

static const tidal_waitop mkdir_op = {"tidal.fs.mkdir", io__fsreq_cancel, NULL};

/* core._fs_mkdir(path, parents, mode) */
static int l_mkdir(lua_State *L) {
  const char *fname = mkdir_op.name;
  const char *path = io__path_check(L, 1, fname);
  int parents = lua_toboolean(L, 2);
  int mode = (int)luaL_optinteger(L, 3, 0777);
  tidal_task *t = tidal__wait_begin(L, fname);
  io_worker *iw = io__worker_check(L, fname);
  io_fsreq *r = io__fsreq_push(L, iw, job_mkdir, fname, path, NULL);
  r->flags = parents;
  r->mode = mode;
  r->obj = (void *)fname;
  return start(L, t, r, &mkdir_op, true_k);
}

/* ----------------------------------------------------------- readdir */

/* An entry in buf: one type byte, then the name and its NUL. buf2: the
** entries' offsets while reading, then pointers to them, sorted by name. */
_Static_assert(sizeof(size_t) == sizeof(char *), "offsets become pointers");

static char mode_char(mode_t m) {
  if (S_ISREG(m)) return 'f';
  if (S_ISDIR(m)) return 'd';
  if (S_ISLNK(m)) return 'l';
  if (S_ISFIFO(m)) return 'p';
  if (S_ISSOCK(m)) return 's';
  if (S_ISCHR(m)) return 'c';
  if (S_ISBLK(m)) return 'b';
  return 'u';
}

static char dtype_char(unsigned char d) {
  switch (d) {
  case DT_REG: return 'f';
  case DT_DIR: return 'd';
  case DT_LNK: return 'l';
  case DT_FIFO: return 'p';
  case DT_SOCK: return 's';
  case DT_CHR: return 'c';
  case DT_BLK: return 'b';
  default: return '?';
  }
}

static int cmp_entries(const void *a, const void *b) {
  const char *x = *(const char *const *)a, *y = *(const char *const *)b;
  return strcmp(x + 1, y + 1); /* bytewise: strcmp compares unsigned chars */
}

static int is_dots(const char *n) {
  return n[0] == '.' && (n[1] == '\0' || (n[1] == '.' && n[2] == '\0'));
}

static void job_readdir(io_fsreq *r) {
  DIR *d = opendir(r->path);
  struct dirent *e;
  size_t n, i;
  if (d == NULL) {
    r->result = ERR;
    return;
  }
  for (;;) {
    size_t off = r->buf.len;
    char ty;
    errno = 0;
    if ((e = readdir(d)) == NULL) {
      if (errno != 0) r->result = ERR;
      break;
    }
    if (is_dots(e->d_name)) continue;
    ty = dtype_char(e->d_type);
    if (ty == '?' && r->flags) {
      struct stat st;
      ty = fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0
               ? mode_char(st.st_mode)
               : 'u';
    }
    if (tidal__buf_add(&r->buf, &ty, 1) != 0 ||
        tidal__buf_add(&r->buf, e->d_name, strlen(e->d_name) + 1) != 0 ||
        tidal__buf_add(&r->buf2, &off, sizeof off) != 0) {
      r->result = UV_ENOMEM;
      break;
    }
  }
  closedir(d);
  if (r->result < 0) return;
  n = r->buf2.len / sizeof(size_t);
  for (i = 0; i < n; i++) { /* offsets -> pointers (buf no longer moves) */
    size_t off;
    const char *p;
    memcpy(&off, r->buf2.data + i * sizeof off, sizeof off);
    p = r->buf.data + off;
    memcpy(r->buf2.data + i * sizeof p, &p, sizeof p);
  }
  if (n > 1) qsort(r->buf2.data, n, sizeof(char *), cmp_entries);
}

static const char *type_of(char c) {
  switch (c) {
  case 'f': return "file";
  case 'd': return "directory";
  case 'l': return "link";
  case 'p': return "fifo";
  case 's': return "socket";
  case 'c': return "char";
  case 'b': return "block";
  default: return "unknown";
  }
}

static int readdir_k(lua_State *L, int status, lua_KContext kc) {
  tidal_task *t = (tidal_task *)kc;
  io_fsreq *r = io__fsreq_take(L, t);
  size_t n, i;
  (void)status;
  if (r->result < 0) return fail(L, r, "tidal.fs.readdir");
  n = r->buf2.len / sizeof(char *);
  lua_createtable(L, (int)(n < INT_MAX ? n : INT_MAX), 0);
  for (i = 0; i < n; i++) {
    const char *ent;
    memcpy(&ent, r->buf2.data + i * sizeof ent, sizeof ent);
    if (r->flags) {
      lua_createtable(L, 0, 2);
      lua_pushstring(L, ent + 1);
      lua_setfield(L, -2, "name");
      lua_pushstring(L, type_of(ent[0]));
      lua_setfield(L, -2, "type");
    } else {
      lua_pushstring(L, ent + 1);
    }
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  io__fsreq_done(L, 1);
  return 1;
}

static const tidal_waitop readdir_op = {"tidal.fs.readdir", io__fsreq_cancel, NULL};

/* core._fs_readdir(path, types) */
static int l_readdir(lua_State *L) {
  const char *fname = readdir_op.name;
  const char *path = io__path_check(L, 1, fname);
  int types = lua_toboolean(L, 2);
  tidal_task *t = tidal__wait_begin(L, fname);
  io_worker *iw = io__worker_check(L, fname);
  io_fsreq *r = io__fsreq_push(L, iw, job_readdir, fname, path, NULL);
  r->flags = types;
  return start(L, t, r, &readdir_op, readdir_k);
}

/* ------------------------------------------------------------ remove */

#define RM_MAXDEPTH 512

/* Removes name in directory at and, if it is a directory, what it
** holds (never following a symbolic link). */
static int rm_tree(int at, const char *name, int depth) {
  int fd, rc = 0;
  DIR *d;
  struct dirent *e;
  if (unlinkat(at, name, 0) == 0) return 0;
  if (errno != EISDIR && errno != EPERM) return ERR;
  if (depth > RM_MAXDEPTH) return UV_ELOOP;
  fd = openat(at, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return errno == ENOTDIR ? UV_EPERM : ERR;
  if ((d = fdopendir(fd)) == NULL) {
    rc = ERR;
    close(fd);
    return rc;
  }
  for (;;) {
    errno = 0;
    if ((e = readdir(d)) == NULL) {
      if (errno != 0) rc = ERR;
      break;
    }
    if (is_dots(e->d_name)) continue;
    if ((rc = rm_tree(dirfd(d), e->d_name, depth + 1)) != 0) break;
  }
  closedir(d);
  if (rc == 0 && unlinkat(at, name, AT_REMOVEDIR) != 0) rc = ERR;
  return rc;
}

static void job_remove(io_fsreq *r) {
  struct stat st;
  if (r->flags) {
    r->result = rm_tree(AT_FDCWD, r->path, 0);
    return;
  }
  if (unlink(r->path) == 0) {
    r->result = 0;
    return;
  }
  /* Linux says EISDIR for a directory; POSIX allows EPERM */
  if ((errno == EISDIR || errno == EPERM) && lstat(r->path, &st) == 0 &&
      S_ISDIR(st.st_mode))
    r->result = rmdir(r->path) == 0 ? 0 : ERR;
  else
    r->result = ERR;
}

static const tidal_waitop remove_op = {"tidal.fs.remove", io__fsreq_cancel, NULL};

/* core._fs_remove(path, recursive) */
static int l_remove(lua_State *L) {
  const char *fname = remove_op.name;
  const char *path = io__path_check(L, 1, fname);
  int recursive = lua_toboolean(L, 2);
  tidal_task *t = tidal__wait_begin(L, fname);
  io_worker *iw = io__worker_check(L, fname);
  io_fsreq *r = io__fsreq_push(L, iw, job_remove, fname, path, NULL);
  r->flags = recursive;
  r->obj = (void *)fname;
  return start(L, t, r, &remove_op, true_k);
}

/* ------------------------------------------------------------ rename */

static void job_rename(io_fsreq *r) {
  r->result = rename(r->path, r->path2) == 0 ? 0 : ERR;
}

static const tidal_waitop rename_op = {"tidal.fs.rename", io__fsreq_cancel, NULL};

/* core._fs_rename(from, to) */
static int l_rename(lua_State *L) {
  const char *fname = rename_op.name;
  const char *from = io__path_check(L, 1, fname);
  const char *to = io__path_check(L, 2, fname);
  tidal_task *t = tidal__wait_begin(L, fname);
  io_worker *iw = io__worker_check(L, fname);
  io_fsreq *r = io__fsreq_push(L, iw, job_rename, fname, from, to);
  r->obj = (void *)fname;
  return start(L, t, r, &rename_op, true_k);
}

static const luaL_Reg funcs[] = {
    {"_fs_read_file", l_read_file}, {"_fs_write_file", l_write_file},
    {"_fs_stat", l_stat},           {"_fs_lstat", l_lstat},
    {"_fs_mkdir", l_mkdir},         {"_fs_readdir", l_readdir},
    {"_fs_remove", l_remove},       {"_fs_rename", l_rename},
    {NULL, NULL}};

/* stack: module, ctx */
void tidal__fs_open(lua_State *L) {
  tidal__register(L, funcs);
  io__file_open(L);
}
