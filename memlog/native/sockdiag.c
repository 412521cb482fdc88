// sockdiag: the kernel's socket table over netlink (NETLINK_SOCK_DIAG), for memlog's connection count.
//
// /proc/net/tcp makes the kernel format ~150 bytes of text for every TCP socket of the host (~2 us a line), and at a
// million connections with the clients on the same host that is two million lines per sample. A SOCK_DIAG_BY_FAMILY
// dump instead runs a small filter program inside the kernel (state ESTABLISHED, local port in the watched set) and
// returns only the matching sockets, as fixed binary records. This addon does just that one dump and hands back the
// inodes; building the filter program, matching inodes to the process tree and everything else stays in TypeScript
// (memlog/netlink.ts). Linux only.
//
// It also loads and runs memlog's eBPF TCP socket iterator (memlog/bpf.ts assembles the program from the running
// kernel's BTF): BPF_PROG_LOAD + BPF_LINK_CREATE once, then per sample BPF_ITER_CREATE and read() until EOF. The
// program writes 4 bytes (the socket inode) per ESTABLISHED socket on the watched ports, so a sample costs the
// kernel's walk and no inet_diag record per socket.

#include <errno.h>
#include <fcntl.h>
#include <sys/syscall.h>
#include <linux/bpf.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <node_api.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>
#include <netinet/tcp.h>

// The kernel caps one dump message batch at 32 KiB; a larger buffer only wastes memory.
#define RECV_BYTES 65536
// Largest filter program accepted from JS: 64 KiB is far more than any port list needs.
#define MAX_BYTECODE 65536

static napi_value throw_errno(napi_env env, const char *what, int err) {
  char msg[160];
  snprintf(msg, sizeof msg, "sockdiag: %s: %s", what, strerror(err));
  char code[32];
  snprintf(code, sizeof code, "SOCKDIAG_ERRNO_%d", err);
  napi_throw_error(env, code, msg);
  return NULL;
}

// Growable array of inodes.
typedef struct {
  uint32_t *v;
  size_t n, cap;
} inodes_t;

static int push(inodes_t *a, uint32_t x) {
  if (a->n == a->cap) {
    size_t cap = a->cap ? a->cap * 2 : 4096;
    uint32_t *v = realloc(a->v, cap * sizeof *v);
    if (!v) return -1;
    a->v = v;
    a->cap = cap;
  }
  a->v[a->n++] = x;
  return 0;
}

// Hands a filled array to JS as a typed array of `type` (32-bit elements) and frees it; with `err`, throws instead.
static napi_value take(napi_env env, inodes_t *a, int err, const char *what, napi_typedarray_type type) {
  napi_value ab, result = NULL;
  void *dst;
  if (err) {
    throw_errno(env, what, err);
  } else if (napi_create_arraybuffer(env, a->n * sizeof(uint32_t), &dst, &ab) == napi_ok) {
    if (a->n) memcpy(dst, a->v, a->n * sizeof(uint32_t));
    napi_create_typedarray(env, type, a->n, ab, 0, &result);
  }
  free(a->v);
  return result;
}

// Sends one dump request and collects the inode of every record; returns 0 or a positive errno.
// ENOENT from the kernel (family not supported, e.g. no IPv6) is an empty result, not an error.
// A nonzero `sport` goes in the request header: the kernel compares it with each socket's local port before it
// would run a filter program, so for one port it replaces the program (no per-socket filter entry to build).
static int dump(int family, uint32_t states, uint16_t sport, const uint8_t *bc, size_t bc_len, inodes_t *out) {
  int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
  if (fd < 0) return errno;

  struct {
    struct nlmsghdr nlh;
    struct inet_diag_req_v2 req;
  } head;
  memset(&head, 0, sizeof head);
  struct nlattr attr;
  memset(&attr, 0, sizeof attr);
  attr.nla_type = INET_DIAG_REQ_BYTECODE;
  attr.nla_len = (uint16_t)(NLA_HDRLEN + bc_len);

  head.nlh.nlmsg_len = (uint32_t)(sizeof head + (bc_len ? NLA_ALIGN(attr.nla_len) : 0));
  head.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  head.nlh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  head.nlh.nlmsg_seq = 1;
  head.req.sdiag_family = (uint8_t)family;
  head.req.sdiag_protocol = IPPROTO_TCP;
  head.req.idiag_states = states;
  // No extensions (tcp_info, meminfo, congestion...): each record is the fixed inet_diag_msg plus the few
  // attributes the kernel always adds, the least it will fill per socket.
  head.req.idiag_ext = 0;
  head.req.id.idiag_sport = htons(sport);

  struct sockaddr_nl kernel;
  memset(&kernel, 0, sizeof kernel);
  kernel.nl_family = AF_NETLINK;
  struct iovec iov[3] = {
    {&head, sizeof head},
    {&attr, sizeof attr},
    {(void *)bc, bc_len},
  };
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  msg.msg_name = &kernel;
  msg.msg_namelen = sizeof kernel;
  msg.msg_iov = iov;
  msg.msg_iovlen = bc_len ? 3 : 1;
  // The attribute's padding, if any, is zero bytes after the program; programs are whole 4-byte ops, so none.
  if (sendmsg(fd, &msg, 0) < 0) {
    int e = errno;
    close(fd);
    return e;
  }

  static __thread uint8_t *buf;
  if (!buf && !(buf = malloc(RECV_BYTES))) {
    close(fd);
    return ENOMEM;
  }
  int err = 0;
  for (;;) {
    ssize_t n = recv(fd, buf, RECV_BYTES, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      err = errno;
      break;
    }
    if (n == 0) break;
    int done = 0;
    for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (size_t)n); h = NLMSG_NEXT(h, n)) {
      if (h->nlmsg_type == NLMSG_DONE) {
        done = 1;
        break;
      }
      if (h->nlmsg_type == NLMSG_ERROR) {
        const struct nlmsgerr *e = NLMSG_DATA(h);
        err = e->error < 0 ? -e->error : EPROTO;
        done = 1;
        break;
      }
      if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY) continue;
      const struct inet_diag_msg *m = NLMSG_DATA(h);
      // Inode 0: no file any more (closing, orphaned), so no process can hold it.
      if (m->idiag_inode != 0 && push(out, m->idiag_inode) != 0) {
        err = ENOMEM;
        done = 1;
        break;
      }
    }
    if (done) break;
  }
  close(fd);
  return err == ENOENT ? 0 : err;
}

// dump(family: number, states: number, bytecode: Uint8Array | null, sport?: number) → Uint32Array of socket inodes.
static napi_value js_dump(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc < 3) {
    napi_throw_type_error(env, "SOCKDIAG_BAD_ARGS", "sockdiag.dump(family, states, bytecode)");
    return NULL;
  }
  int32_t family;
  uint32_t states;
  if (napi_get_value_int32(env, argv[0], &family) != napi_ok || (family != AF_INET && family != AF_INET6)) {
    napi_throw_type_error(env, "SOCKDIAG_BAD_ARGS", "sockdiag.dump: family must be AF_INET (2) or AF_INET6 (10)");
    return NULL;
  }
  if (napi_get_value_uint32(env, argv[1], &states) != napi_ok) {
    napi_throw_type_error(env, "SOCKDIAG_BAD_ARGS", "sockdiag.dump: states must be a 32-bit mask");
    return NULL;
  }
  const uint8_t *bc = NULL;
  size_t bc_len = 0;
  napi_valuetype t;
  napi_typeof(env, argv[2], &t);
  if (t != napi_null && t != napi_undefined) {
    bool is_ta = false;
    napi_is_typedarray(env, argv[2], &is_ta);
    napi_typedarray_type tt;
    void *data = NULL;
    if (!is_ta || napi_get_typedarray_info(env, argv[2], &tt, &bc_len, &data, NULL, NULL) != napi_ok || tt != napi_uint8_array ||
        bc_len % 4 != 0 || bc_len > MAX_BYTECODE) {
      napi_throw_type_error(env, "SOCKDIAG_BAD_ARGS", "sockdiag.dump: bytecode must be a Uint8Array of whole 4-byte ops, at most 64 KiB");
      return NULL;
    }
    bc = data;
  }
  uint32_t sport = 0;
  if (argc >= 4) {
    napi_typeof(env, argv[3], &t);
    if (t != napi_undefined && (napi_get_value_uint32(env, argv[3], &sport) != napi_ok || sport > 65535)) {
      napi_throw_type_error(env, "SOCKDIAG_BAD_ARGS", "sockdiag.dump: sport must be a port 0-65535 (0: any)");
      return NULL;
    }
  }

  inodes_t a = {0};
  return take(env, &a, dump(family, states, (uint16_t)sport, bc, bc_len, &a), "SOCK_DIAG_BY_FAMILY dump", napi_uint32_array);
}

// --- The eBPF TCP socket iterator ---

// Largest program accepted from JS (a port tree for 4,096 ports is ~8,200 instructions).
#define MAX_INSNS 65536
// The verifier's log, asked for only after a load fails (the second load's rolling log keeps the end: the error).
#define VERIFIER_LOG_BYTES (1 << 20)
// At most this much of the log's end goes into the error message.
#define VERIFIER_LOG_TAIL 3000
// The kernel copies at most one seq_file buffer (8 pages) per read(); ask for more so no read is cut short.
#define ITER_READ_BYTES (1 << 18)
// read() returns EAGAIN when it walked MAX_ITER_OBJECTS (1M) sockets without output; it resumes where it stopped.
#define ITER_MAX_EAGAIN 4096

static long sys_bpf(int cmd, union bpf_attr *attr) {
  return syscall(__NR_bpf, cmd, attr, sizeof *attr);
}

// Loads a GPL program (bpf_seq_write and bpf_probe_read_kernel are GPL-only); with `log`, asks for the verifier log.
static int load_prog(uint32_t type, uint32_t attach_type, uint32_t btf_id, const int *fd_array, const char *name, const void *insns, size_t n,
                     char *log, uint32_t log_size) {
  union bpf_attr a;
  memset(&a, 0, sizeof a);
  a.prog_type = type;
  a.expected_attach_type = attach_type;
  a.attach_btf_id = btf_id;  // attach_btf_obj_fd 0: vmlinux's BTF
  a.fd_array = (uint64_t)(uintptr_t)fd_array;
  a.insns = (uint64_t)(uintptr_t)insns;
  a.insn_cnt = (uint32_t)n;
  a.license = (uint64_t)(uintptr_t) "GPL";
  strncpy(a.prog_name, name, sizeof a.prog_name - 1);
  if (log) {
    a.log_level = 1;
    a.log_buf = (uint64_t)(uintptr_t)log;
    a.log_size = log_size;
    log[0] = 0;
  }
  int fd;
  do fd = (int)sys_bpf(BPF_PROG_LOAD, &a);
  while (fd < 0 && errno == EAGAIN && !log);
  return fd;
}

// Throws the load error `err` of the program, with the end of the verifier's log (from a second load that asks
// for it: the rolling log keeps its end, where the error is).
static napi_value throw_load_error(napi_env env, int err, const char *what, uint32_t type, uint32_t attach_type, uint32_t btf_id, const int *fd_array,
                                   const void *insns, size_t n) {
  char *log = malloc(VERIFIER_LOG_BYTES);
  if (log) {
    load_prog(type, attach_type, btf_id, fd_array, "memlog", insns, n, log, VERIFIER_LOG_BYTES);
    log[VERIFIER_LOG_BYTES - 1] = 0;
  }
  size_t len = log ? strlen(log) : 0;
  while (len > 0 && (log[len - 1] == '\n' || log[len - 1] == ' ')) log[--len] = 0;
  const char *tail = log ? (len > VERIFIER_LOG_TAIL ? log + len - VERIFIER_LOG_TAIL : log) : "";
  // Start the tail at a line.
  if (log && tail != log) {
    const char *nl = strchr(tail, '\n');
    if (nl) tail = nl + 1;
  }
  char *msg = malloc(VERIFIER_LOG_TAIL + 256);
  char code[32];
  snprintf(code, sizeof code, "SOCKDIAG_ERRNO_%d", err);
  if (msg) {
    snprintf(msg, VERIFIER_LOG_TAIL + 256, "sockdiag: BPF_PROG_LOAD (%s): %s; verifier log%s: %s", what, strerror(err), len > VERIFIER_LOG_TAIL ? " (end)" : "",
             *tail ? tail : "(empty)");
    napi_throw_error(env, code, msg);
  } else {
    throw_errno(env, "BPF_PROG_LOAD", err);
  }
  free(msg);
  free(log);
  return NULL;
}

// The instructions argument: a Uint8Array of whole 8-byte instructions, 1 to MAX_INSNS. NULL (thrown) otherwise.
static const void *get_insns(napi_env env, napi_value v, size_t *n, const char *fn) {
  bool is_ta = false;
  napi_typedarray_type tt;
  size_t len = 0;
  void *data = NULL;
  napi_is_typedarray(env, v, &is_ta);
  if (!is_ta || napi_get_typedarray_info(env, v, &tt, &len, &data, NULL, NULL) != napi_ok || tt != napi_uint8_array || len == 0 || len % 8 != 0 ||
      len / 8 > MAX_INSNS) {
    char msg[160];
    snprintf(msg, sizeof msg, "sockdiag.%s: insns must be a Uint8Array of whole 8-byte instructions, 1 to 65536 of them", fn);
    napi_throw_type_error(env, "SOCKDIAG_BAD_ARGS", msg);
    return NULL;
  }
  *n = len / 8;
  return data;
}

// iterLoad(insns: Uint8Array, attachBtfId: number) → fd of a bpf_iter link (BPF_TRACE_ITER) for the program.
// Errors: SOCKDIAG_BAD_ARGS; SOCKDIAG_ERRNO_<n> with the verifier's log (its end) in the message when the load fails.
static napi_value js_iter_load(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  size_t n = 0;
  const void *insns = argc >= 1 ? get_insns(env, argv[0], &n, "iterLoad") : NULL;
  if (!insns) {
    if (argc < 1) napi_throw_type_error(env, "SOCKDIAG_BAD_ARGS", "sockdiag.iterLoad(insns, attachBtfId)");
    return NULL;
  }
  napi_valuetype t = napi_undefined;
  if (argc >= 2) napi_typeof(env, argv[1], &t);
  double d = 0;
  if (t != napi_number || napi_get_value_double(env, argv[1], &d) != napi_ok || d < 1 || d > 0xfffff || d != (double)(uint32_t)d) {
    napi_throw_type_error(env, "SOCKDIAG_BAD_ARGS", "sockdiag.iterLoad: attachBtfId must be a BTF type id (1 to 1048575)");
    return NULL;
  }
  uint32_t btf_id = (uint32_t)d;
  int prog = load_prog(BPF_PROG_TYPE_TRACING, BPF_TRACE_ITER, btf_id, NULL, "memlog_tcp", insns, n, NULL, 0);
  if (prog < 0) return throw_load_error(env, errno, "tracing, iter/tcp", BPF_PROG_TYPE_TRACING, BPF_TRACE_ITER, btf_id, NULL, insns, n);
  union bpf_attr a;
  memset(&a, 0, sizeof a);
  a.link_create.prog_fd = (uint32_t)prog;
  a.link_create.attach_type = BPF_TRACE_ITER;
  int link = (int)sys_bpf(BPF_LINK_CREATE, &a);
  int err = errno;
  close(prog);  // the link holds the program
  if (link < 0) return throw_errno(env, "BPF_LINK_CREATE", err);
  napi_value result;
  napi_create_int32(env, link, &result);
  return result;
}

// Runs the iterator once: BPF_ITER_CREATE, read() to EOF, close. Fills `out` with the program's 4-byte records.
static int iter_read(int link, inodes_t *out) {
  union bpf_attr a;
  memset(&a, 0, sizeof a);
  a.iter_create.link_fd = (uint32_t)link;
  int fd = (int)sys_bpf(BPF_ITER_CREATE, &a);
  if (fd < 0) return errno;
  size_t bytes = 0;
  int err = 0, eagain = 0;
  for (;;) {
    size_t cap = out->cap * sizeof(uint32_t);
    if (cap - bytes < ITER_READ_BYTES) {
      size_t ncap = out->cap ? out->cap * 2 : 65536;
      while (ncap * sizeof(uint32_t) - bytes < ITER_READ_BYTES) ncap *= 2;
      uint32_t *v = realloc(out->v, ncap * sizeof *v);
      if (!v) {
        err = ENOMEM;
        break;
      }
      out->v = v;
      out->cap = ncap;
      cap = ncap * sizeof(uint32_t);
    }
    ssize_t n = read(fd, (uint8_t *)out->v + bytes, cap - bytes);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN && ++eagain < ITER_MAX_EAGAIN) continue;
      err = errno;
      break;
    }
    if (n == 0) break;
    bytes += (size_t)n;
  }
  close(fd);
  if (!err && bytes % sizeof(uint32_t) != 0) err = EPROTO;
  out->n = bytes / sizeof(uint32_t);
  return err;
}

// iterRead(linkFd: number) → Uint32Array of what the program wrote (memlog's: socket inodes).
static napi_value js_iter_read(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  int32_t link;
  if (argc < 1 || napi_get_value_int32(env, argv[0], &link) != napi_ok || link < 0) {
    napi_throw_type_error(env, "SOCKDIAG_BAD_ARGS", "sockdiag.iterRead: linkFd must be a file descriptor (0 or more)");
    return NULL;
  }
  inodes_t a = {0};
  return take(env, &a, iter_read(link, &a), "bpf iterator", napi_uint32_array);
}

// --- The table walk (memlog/bpf.ts, "The table walk"): a raw tracepoint program run by BPF_PROG_TEST_RUN ---

// The header of the walk's map value, as memlog/bpf.ts WALK_HDR lays it out (a test compares them); the lanes
// follow it, the inodes start at WALK_OUT.
#define WALK_BUCKET 0
#define WALK_COUNT 8
#define WALK_DONE 12
#define WALK_STEPS 16
#define WALK_RESTARTS 20
#define WALK_BUCKETS 24
#define WALK_FAULTS 28
#define WALK_PORTS 256
#define WALK_OUT (256 + 8192)
// Largest map value accepted (header + inodes of one run).
#define WALK_MAX_VALUE (16 << 20)
// Runs of one walk at most (16 G steps): a walk that is not done by then is an error, as is a run with no step.
#define WALK_MAX_RUNS (1u << 20)

typedef struct {
  int prog, map;
  uint8_t *mem;
  size_t size, value_size;
  uint32_t runs, restarts, faults, buckets;
} walk_t;

static void walk_release(walk_t *w) {
  if (w->mem) munmap(w->mem, w->size);
  if (w->prog >= 0) close(w->prog);
  if (w->map >= 0) close(w->map);
  w->mem = NULL;
  w->prog = w->map = -1;
}

static void walk_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  walk_release(data);
  free(data);
}

static walk_t *get_walk(napi_env env, napi_value v, const char *fn) {
  void *data = NULL;
  napi_valuetype t;
  napi_typeof(env, v, &t);
  if (t != napi_external || napi_get_value_external(env, v, &data) != napi_ok || !data) {
    char msg[120];
    snprintf(msg, sizeof msg, "sockdiag.%s: expects the handle walkOpen returned", fn);
    napi_throw_type_error(env, "SOCKDIAG_BAD_ARGS", msg);
    return NULL;
  }
  return data;
}

static uint32_t hdr32(const walk_t *w, size_t off) {
  uint32_t v;
  memcpy(&v, w->mem + off, 4);
  return v;
}

// walkOpen(insns: Uint8Array, valueSize: number, init: Uint8Array) → handle: creates the walk's map (one array
// value of valueSize bytes, mmapped here), copies `init` (the port map) to its start, and loads the program with
// the map as fd_array[0].
static napi_value js_walk_open(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  size_t n = 0;
  const void *insns = argc >= 1 ? get_insns(env, argv[0], &n, "walkOpen") : NULL;
  if (!insns) {
    if (argc < 1) napi_throw_type_error(env, "SOCKDIAG_BAD_ARGS", "sockdiag.walkOpen(insns, valueSize, init)");
    return NULL;
  }
  uint32_t value_size = 0;
  if (argc < 2 || napi_get_value_uint32(env, argv[1], &value_size) != napi_ok || value_size <= WALK_OUT || value_size > WALK_MAX_VALUE ||
      value_size % 4 != 0) {
    napi_throw_type_error(env, "SOCKDIAG_BAD_ARGS", "sockdiag.walkOpen: valueSize must be a multiple of 4 past the header and port map, at most 16 MiB");
    return NULL;
  }
  bool is_ta = false;
  napi_typedarray_type tt;
  size_t init_len = 0;
  void *init = NULL;
  if (argc >= 3) napi_is_typedarray(env, argv[2], &is_ta);
  if (!is_ta || napi_get_typedarray_info(env, argv[2], &tt, &init_len, &init, NULL, NULL) != napi_ok || tt != napi_uint8_array || init_len > value_size) {
    napi_throw_type_error(env, "SOCKDIAG_BAD_ARGS", "sockdiag.walkOpen: init must be a Uint8Array no longer than valueSize");
    return NULL;
  }
  walk_t *w = calloc(1, sizeof *w);
  if (!w) return throw_errno(env, "walkOpen", ENOMEM);
  w->prog = w->map = -1;
  w->value_size = value_size;
  union bpf_attr a;
  memset(&a, 0, sizeof a);
  a.map_type = BPF_MAP_TYPE_ARRAY;
  a.key_size = 4;
  a.value_size = value_size;
  a.max_entries = 1;
  a.map_flags = BPF_F_MMAPABLE;
  strncpy(a.map_name, "memlog_walk", sizeof a.map_name - 1);
  w->map = (int)sys_bpf(BPF_MAP_CREATE, &a);
  if (w->map < 0) {
    int err = errno;
    walk_finalize(env, w, NULL);
    return throw_errno(env, "BPF_MAP_CREATE", err);
  }
  long page = sysconf(_SC_PAGESIZE);
  w->size = (value_size + (size_t)page - 1) / (size_t)page * (size_t)page;
  void *mem = mmap(NULL, w->size, PROT_READ | PROT_WRITE, MAP_SHARED, w->map, 0);
  if (mem == MAP_FAILED) {
    int err = errno;
    walk_finalize(env, w, NULL);
    return throw_errno(env, "mmap of the walk's map", err);
  }
  w->mem = mem;
  if (init_len) memcpy(w->mem, init, init_len);
  int fds[1] = {w->map};
  w->prog = load_prog(BPF_PROG_TYPE_RAW_TRACEPOINT, 0, 0, fds, "memlog_walk", insns, n, NULL, 0);
  if (w->prog < 0) {
    int err = errno;
    throw_load_error(env, err, "raw_tracepoint, table walk", BPF_PROG_TYPE_RAW_TRACEPOINT, 0, 0, fds, insns, n);
    walk_finalize(env, w, NULL);
    return NULL;
  }
  napi_value result;
  if (napi_create_external(env, w, walk_finalize, NULL, &result) != napi_ok) {
    walk_finalize(env, w, NULL);
    return NULL;
  }
  return result;
}

// One whole walk: runs the program until it reports the last bucket done, collecting each run's inodes.
static int walk_run(walk_t *w, inodes_t *out) {
  memset(w->mem, 0, WALK_PORTS);  // header and lanes; the port map stays
  w->runs = 0;
  uint32_t cap = (uint32_t)((w->value_size - WALK_OUT) / 4);
  for (;;) {
    if (w->runs >= WALK_MAX_RUNS) return ELOOP;
    union bpf_attr a;
    memset(&a, 0, sizeof a);
    a.test.prog_fd = (uint32_t)w->prog;
    if (sys_bpf(BPF_PROG_TEST_RUN, &a) < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    w->runs++;
    uint32_t done = hdr32(w, WALK_DONE), count = hdr32(w, WALK_COUNT);
    if (done == 2) return ENOENT;  // the program could not read this namespace's table
    if (count > cap) return EPROTO;
    for (uint32_t i = 0; i < count; i++) {
      uint32_t ino;
      memcpy(&ino, w->mem + WALK_OUT + 4 * (size_t)i, 4);
      if (push(out, ino) != 0) return ENOMEM;
    }
    if (done == 1) break;
    // Each run opens a bucket or reads a socket at least.
    if (hdr32(w, WALK_STEPS) == 0) return EPROTO;
  }
  w->restarts = hdr32(w, WALK_RESTARTS);
  w->faults = hdr32(w, WALK_FAULTS);
  w->buckets = hdr32(w, WALK_BUCKETS);
  return 0;
}

// walkRun(handle) → Uint32Array of the inodes one whole walk wrote.
static napi_value js_walk_run(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  walk_t *w = argc >= 1 ? get_walk(env, argv[0], "walkRun") : NULL;
  if (!w) {
    if (argc < 1) napi_throw_type_error(env, "SOCKDIAG_BAD_ARGS", "sockdiag.walkRun(handle)");
    return NULL;
  }
  if (w->prog < 0) {
    napi_throw_error(env, "SOCKDIAG_BAD_ARGS", "sockdiag.walkRun: the walk was closed");
    return NULL;
  }
  inodes_t a = {0};
  return take(env, &a, walk_run(w, &a), "bpf table walk", napi_uint32_array);
}

// walkStats(handle) → {runs, buckets, restarts, faults} of the last walk.
static napi_value js_walk_stats(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  walk_t *w = argc >= 1 ? get_walk(env, argv[0], "walkStats") : NULL;
  if (!w) return NULL;
  napi_value o, v;
  napi_create_object(env, &o);
  const struct {
    const char *k;
    uint32_t v;
  } f[] = {{"runs", w->runs}, {"buckets", w->buckets}, {"restarts", w->restarts}, {"faults", w->faults}};
  for (size_t i = 0; i < 4; i++) {
    napi_create_uint32(env, f[i].v, &v);
    napi_set_named_property(env, o, f[i].k, v);
  }
  return o;
}

// walkClose(handle): unloads the program and frees the map now (the handle's finalizer would, at some GC).
static napi_value js_walk_close(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  walk_t *w = argc >= 1 ? get_walk(env, argv[0], "walkClose") : NULL;
  if (w) walk_release(w);
  return NULL;
}

// The uapi constants the TypeScript side hard-codes, as this build's headers define them (checked by a test).
static napi_value bpf_constants(napi_env env) {
  const struct {
    const char *name;
    int32_t value;
  } c[] = {
      {"BPF_FUNC_seq_write", BPF_FUNC_seq_write},
      {"BPF_FUNC_skc_to_tcp_sock", BPF_FUNC_skc_to_tcp_sock},
      {"TCP_ESTABLISHED", TCP_ESTABLISHED},
      {"BPF_JLT", BPF_JLT},
      {"BPF_JLE", BPF_JLE},
      {"BPF_MOV", BPF_MOV},
      {"BPF_ALU64", BPF_ALU64},
      {"BPF_DW", BPF_DW},
      {"BPF_FUNC_get_current_task", BPF_FUNC_get_current_task},
      {"BPF_FUNC_probe_read_kernel", BPF_FUNC_probe_read_kernel},
      {"BPF_PSEUDO_KFUNC_CALL", BPF_PSEUDO_KFUNC_CALL},
      {"BPF_PSEUDO_MAP_IDX_VALUE", BPF_PSEUDO_MAP_IDX_VALUE},
      {"WALK_BUCKET", WALK_BUCKET},
      {"WALK_COUNT", WALK_COUNT},
      {"WALK_STEPS", WALK_STEPS},
      {"WALK_DONE", WALK_DONE},
      {"WALK_RESTARTS", WALK_RESTARTS},
      {"WALK_BUCKETS", WALK_BUCKETS},
      {"WALK_FAULTS", WALK_FAULTS},
      {"WALK_PORTS", WALK_PORTS},
      {"WALK_OUT", WALK_OUT},
  };
  napi_value o, v;
  napi_create_object(env, &o);
  for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
    napi_create_int32(env, c[i].value, &v);
    napi_set_named_property(env, o, c[i].name, v);
  }
  return o;
}

// --- /proc/<pid>/fd without a string per fd ---
//
// fs.readdirSync makes a JS string for each of a process's fds, and libuv sorts them: ~0.9 us an fd, ~0.9 s for a
// million. Here getdents64 fills a buffer and the names become integers in place.

// The record getdents64(2) returns (its man page's definition; glibc's dirent64 needs _GNU_SOURCE).
struct linux_dirent64 {
  uint64_t d_ino;
  int64_t d_off;
  unsigned short d_reclen;
  unsigned char d_type;
  char d_name[];
};

// Reads a pid's fd directory into `out` (fd numbers, unsorted); returns 0 or a positive errno.
static int list_fds(int pid, inodes_t *out) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/fd", pid);
  int dir = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0) return errno;
  static __thread char *buf;
  if (!buf && !(buf = malloc(RECV_BYTES * 4))) {
    close(dir);
    return ENOMEM;
  }
  int err = 0;
  for (;;) {
    long n = syscall(SYS_getdents64, dir, buf, RECV_BYTES * 4);
    if (n < 0) {
      err = errno;
      break;
    }
    if (n == 0) break;
    for (long at = 0; at < n;) {
      struct linux_dirent64 *d = (struct linux_dirent64 *)(buf + at);
      at += d->d_reclen;
      const char *c = d->d_name;
      if (*c < '0' || *c > '9') continue;  // "." and ".."
      uint32_t fd = 0;
      while (*c >= '0' && *c <= '9') fd = fd * 10 + (uint32_t)(*c++ - '0');
      if (push(out, fd) != 0) {
        err = ENOMEM;
        break;
      }
    }
    if (err) break;
  }
  close(dir);
  return err;
}

// Reads each fd's link and returns the socket inode ("socket:[N]"), or 0 for other files and closed fds.
static int socket_inodes(int pid, const int32_t *fds, size_t n, uint32_t *out) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/fd", pid);
  int dir = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0) return errno;
  char name[16], link[64];
  for (size_t i = 0; i < n; i++) {
    out[i] = 0;
    snprintf(name, sizeof name, "%d", fds[i]);
    ssize_t len = readlinkat(dir, name, link, sizeof link - 1);
    if (len < 9 || memcmp(link, "socket:[", 8) != 0) continue;
    uint32_t ino = 0;
    for (ssize_t k = 8; k < len && link[k] >= '0' && link[k] <= '9'; k++) ino = ino * 10 + (uint32_t)(link[k] - '0');
    out[i] = ino;
  }
  close(dir);
  return 0;
}

static int get_pid(napi_env env, napi_value v, int32_t *pid) {
  if (napi_get_value_int32(env, v, pid) != napi_ok || *pid < 1) {
    napi_throw_type_error(env, "SOCKDIAG_BAD_ARGS", "sockdiag: pid must be a positive integer");
    return -1;
  }
  return 0;
}

// listFds(pid) → Int32Array of the pid's open fd numbers; throws SOCKDIAG_ERRNO_<n> (ENOENT: process gone).
static napi_value js_list_fds(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t pid;
  if (argc < 1 || get_pid(env, argv[0], &pid) != 0) return NULL;
  inodes_t a = {0};
  return take(env, &a, list_fds(pid, &a), "listing /proc/<pid>/fd", napi_int32_array);
}

// socketInodes(pid, fds: Int32Array) → Uint32Array: the socket inode behind each fd, 0 when not a socket or closed.
static napi_value js_socket_inodes(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t pid;
  if (argc < 2 || get_pid(env, argv[0], &pid) != 0) return NULL;
  bool is_ta = false;
  napi_is_typedarray(env, argv[1], &is_ta);
  napi_typedarray_type tt;
  size_t n = 0;
  void *data = NULL;
  if (!is_ta || napi_get_typedarray_info(env, argv[1], &tt, &n, &data, NULL, NULL) != napi_ok || tt != napi_int32_array) {
    napi_throw_type_error(env, "SOCKDIAG_BAD_ARGS", "sockdiag.socketInodes: fds must be an Int32Array");
    return NULL;
  }
  napi_value ab, result;
  void *dst;
  if (napi_create_arraybuffer(env, n * sizeof(uint32_t), &dst, &ab) != napi_ok) return NULL;
  int err = socket_inodes(pid, data, n, dst);
  if (err) return throw_errno(env, "opening /proc/<pid>/fd", err);
  napi_create_typedarray(env, napi_uint32_array, n, ab, 0, &result);
  return result;
}

static napi_value init(napi_env env, napi_value exports) {
  const struct {
    const char *name;
    napi_callback fn;
  } fns[] = {{"dump", js_dump}, {"listFds", js_list_fds}, {"socketInodes", js_socket_inodes}, {"iterLoad", js_iter_load}, {"iterRead", js_iter_read}, {"walkOpen", js_walk_open}, {"walkRun", js_walk_run}, {"walkStats", js_walk_stats},
                {"walkClose", js_walk_close}};
  for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
    napi_value f;
    napi_create_function(env, fns[i].name, NAPI_AUTO_LENGTH, fns[i].fn, NULL, &f);
    napi_set_named_property(env, exports, fns[i].name, f);
  }
  napi_set_named_property(env, exports, "bpfConstants", bpf_constants(env));
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
