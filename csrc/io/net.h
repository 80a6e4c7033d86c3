/*
** net.h: what the files of tidal.net share (stream.c, listener.c,
** connect.c, addr.c, udp.c, move.c, net.c). Internal to csrc/io/.
*/
#ifndef TIDAL_IO_NET_H
#define TIDAL_IO_NET_H

#include "io.h"

#include <netinet/in.h>
#include <sys/types.h>
#include <sys/un.h>

/* stream flags */
#define SF_READING 0x0001  /* uv_read_start is on */
#define SF_PAUSED 0x0002   /* reading stopped: the buffer is full */
#define SF_EOF 0x0004      /* the peer sent EOF */
#define SF_WSHUT 0x0008    /* shutdown() was called: no more writes */
#define SF_SHUTDONE 0x0010 /* the shutdown completed (shut_status) */
#define SF_CLOSING 0x0020  /* uv_close was called */
#define SF_LIVE 0x0040     /* in the worker's live list */
#define SF_NODELAY 0x0080  /* TCP_NODELAY wanted: set at the first write */
#define SF_BARE 0x0100     /* a TCP socket no libuv handle owns yet (fd) */
#define SF_HINIT 0x0200    /* SF_BARE, but its handle is initialised */

struct io_stream {
  io_obj obj; /* first */
  union {
    uv_handle_t h;
    uv_stream_t s;
    uv_tcp_t tcp;
    uv_pipe_t pipe;
  } u; /* u.h.data = this */
  uint8_t kind, dirs;
  uint16_t f;
  int fd;          /* the socket (uv_fileno), for the send fast path;
                   ** SF_BARE: owned by the stream until it needs a handle */
  int rerr;        /* sticky read error, reported after the buffered bytes */
  int werr;        /* sticky write error */
  int shut_status; /* of the finished shutdown */
  tidal_buf rb;    /* unread bytes: rb.data[rpos .. rb.len) */
  size_t rpos;
  size_t rmax;     /* pause reading at this many unread bytes */
  size_t want;     /* bytes the head reader needs */
  size_t scan;     /* unread bytes known to hold no '\n' */
  uint8_t line;    /* the head reader waits for a line */
  tidal_wq readers;  /* FIFO; only the head is served */
  tidal_wq writers;  /* writes not started: the queue is above the HWM */
  tidal_wq shutters; /* tasks waiting for the shutdown */
  int nparked;       /* tasks parked on it: the handle is referenced */
  int nwoken;        /* writers woken from writers, not yet run */
  int nwreq;         /* write requests in flight, background ones too */
  uv_shutdown_t sreq;
  struct sockaddr_storage peer; /* from accept4 / connect; family 0: none */
  io_stream *next_free;
};

/* A queued write: the bytes the kernel did not take at once. */
typedef struct io_wreq {
  uv_write_t req;
  io_stream *s;
  io_worker *iw;
  tidal_task *task; /* the writer waiting for it; NULL: in the background */
  int status;
  size_t len, cap;
  char *data; /* = inl for small requests */
  char inl[];
} io_wreq;

typedef struct io_listener {
  io_obj obj; /* first */
  uv_poll_t poll;
  uv_timer_t retry; /* EMFILE backoff */
  int fd, kind;     /* IO_TCP or IO_UNIX */
  uint8_t polling, backoff, closing;
  uint8_t idle_polls; /* poll callbacks with nobody to wake, in a row */
  int nclose; /* handles whose close callback has not run */
  tidal_wq acceptors;
  int nparked, nwoken;
  uint32_t backoff_ms;
  int nodelay, keepalive;
  size_t rbuf;
  char *path; /* unix: the socket file we bound (unlinked at close) */
  dev_t dev;  /* ... and its identity, so we never unlink another's */
  ino_t ino;
} io_listener;

/* What moves when a stream, listener or UDP socket is sent to another
** worker (move.c): a duplicate of its descriptor and its state. The
** sending buffer holds one reference, a userdata that received it
** another; whoever drops the last one closes fd if nobody adopted it. */
typedef struct io_move {
  atomic_int refs;
  atomic_int taken; /* a userdata claimed it (the first receiver) */
  int tt, kind, dirs, fd; /* fd: F_DUPFD_CLOEXEC copy; -1 once adopted */
  uint16_t f;       /* stream flags that carry over (EOF, shut down) */
  int rerr, werr;
  size_t rmax;
  int nodelay, keepalive;
  tidal_buf pending; /* a stream's unread bytes */
  struct sockaddr_storage peer;
  char *path; /* a unix listener's socket file (removed at close) */
  dev_t dev;
  ino_t ino;
  io_ud *origin; /* the sending userdata, during the encode only */
} io_move;

io_move *io__move_new(int tt, int kind);
void io__move_release(io_move *m); /* any thread */

/* stream.c */
void io__stream_ref(io_stream *s);   /* a task parks on it */
void io__stream_unref(io_stream *s); /* ... and no longer does */
void io__stream_open(lua_State *L);  /* registers the Stream type */

/* addr.c */
/* host (an IP literal, IPv6 bracketed or not) and port into sa: 0, or
** UV_EINVAL when host is not a literal. */
int io__addr_parse(const char *host, int port, int family,
                   struct sockaddr_storage *sa);
/* Pushes sa's host string and port (2 values); a v4-mapped IPv6 address
** reads as IPv4. An AF_UNIX address pushes its path ("" if unnamed) and
** nil. Family 0: nil, nil. */
void io__addr_push(lua_State *L, const struct sockaddr *sa, socklen_t len);
/* "host:port" / "[v6]:port" into a Lua string pushed on the stack. */
void io__addr_push_label(lua_State *L, const char *host, int port);
void io__addr_open(lua_State *L); /* _net_resolve */
int io__check_port(lua_State *L, int idx, int zero_ok, const char *fname);

/* listener.c, connect.c, udp.c, move.c */
void io__listener_open(lua_State *L);
void io__connect_open(lua_State *L);
void io__udp_open(lua_State *L);
void io__move_open(lua_State *L);

/* stream.c: a stream from an fd that accept4 or a move gave us (kind
** IO_TCP, IO_UNIX or IO_PIPE); 0, or a UV error (the fd is closed then).
** A TCP stream stays bare (SF_BARE: no libuv handle) until it needs the
** loop; see stream.c. */
int io__stream_from_fd(io_worker *iw, int kind, int dirs, int fd,
                       size_t rbuf, io_stream **out);
/* The options of a new TCP stream; 0 or a UV error. */
int io__stream_tcp_opts(io_stream *s, int nodelay, int keepalive);

/* Moving (move.c): why s / l cannot move now (NULL: it can); detach it
** into m (closes it); rebuild one from m in iw (takes m->fd). */
const char *io__stream_busy(io_stream *s);
int io__stream_detach(io_stream *s, io_move *m);
int io__stream_rebuild(io_worker *iw, io_move *m, io_stream **out);
const char *io__listener_busy(io_listener *l);
int io__listener_detach(io_listener *l, io_move *m);
int io__listener_rebuild(io_worker *iw, io_move *m, io_listener **out);
const char *io__udp_busy(void *core);
int io__udp_detach(void *core, io_move *m);
int io__udp_rebuild(io_worker *iw, io_move *m, io_obj **out);

#endif
