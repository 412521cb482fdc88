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

static int load_tracing_iter(const void *insns, size_t n, uint32_t btf_id, char *log, uint32_t log_size) {
  union bpf_attr a;
  memset(&a, 0, sizeof a);
  a.prog_type = BPF_PROG_TYPE_TRACING;
  a.expected_attach_type = BPF_TRACE_ITER;
  a.attach_btf_id = btf_id;  // attach_btf_obj_fd 0: vmlinux's BTF
  a.insns = (uint64_t)(uintptr_t)insns;
  a.insn_cnt = (uint32_t)n;
  a.license = (uint64_t)(uintptr_t) "GPL";  // bpf_seq_write is GPL-only
  strncpy(a.prog_name, "memlog_tcp", sizeof a.prog_name - 1);
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

// iterLoad(insns: Uint8Array, attachBtfId: number) → fd of a bpf_iter link (BPF_TRACE_ITER) for the program.
// Errors: SOCKDIAG_BAD_ARGS; SOCKDIAG_ERRNO_<n> with the verifier's log (its end) in the message when the load fails.
static napi_value js_iter_load(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  bool is_ta = false;
  napi_typedarray_type tt;
  size_t len = 0;
  void *data = NULL;
  if (argc >= 1) napi_is_typedarray(env, argv[0], &is_ta);
  if (!is_ta || napi_get_typedarray_info(env, argv[0], &tt, &len, &data, NULL, NULL) != napi_ok || tt != napi_uint8_array || len == 0 ||
      len % 8 != 0 || len / 8 > MAX_INSNS) {
    napi_throw_type_error(env, "SOCKDIAG_BAD_ARGS", "sockdiag.iterLoad: insns must be a Uint8Array of whole 8-byte instructions, 1 to 65536 of them");
    return NULL;
  }
  uint32_t btf_id = 0;
  napi_valuetype t = napi_undefined;
  if (argc >= 2) napi_typeof(env, argv[1], &t);
  double d = 0;
  if (t != napi_number || napi_get_value_double(env, argv[1], &d) != napi_ok || d < 1 || d > 0xfffff || d != (double)(uint32_t)d) {
    napi_throw_type_error(env, "SOCKDIAG_BAD_ARGS", "sockdiag.iterLoad: attachBtfId must be a BTF type id (1 to 1048575)");
    return NULL;
  }
  btf_id = (uint32_t)d;

  int prog = load_tracing_iter(data, len / 8, btf_id, NULL, 0);
  if (prog < 0) {
    int err = errno;
    char *log = malloc(VERIFIER_LOG_BYTES);
    if (log) {
      load_tracing_iter(data, len / 8, btf_id, log, VERIFIER_LOG_BYTES);
      log[VERIFIER_LOG_BYTES - 1] = 0;
    }
    size_t n = log ? strlen(log) : 0;
    while (n > 0 && (log[n - 1] == '\n' || log[n - 1] == ' ')) log[--n] = 0;
    const char *tail = log ? (n > VERIFIER_LOG_TAIL ? log + n - VERIFIER_LOG_TAIL : log) : "";
    char *msg = malloc(VERIFIER_LOG_TAIL + 256);
    char code[32];
    snprintf(code, sizeof code, "SOCKDIAG_ERRNO_%d", err);
    if (msg) {
      snprintf(msg, VERIFIER_LOG_TAIL + 256, "sockdiag: BPF_PROG_LOAD (tracing, iter/tcp): %s; verifier log%s: %s", strerror(err),
               n > VERIFIER_LOG_TAIL ? " (end)" : "", *tail ? tail : "(empty)");
      napi_throw_error(env, code, msg);
    } else {
      throw_errno(env, "BPF_PROG_LOAD", err);
    }
    free(msg);
    free(log);
    return NULL;
  }
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
  } fns[] = {{"dump", js_dump}, {"listFds", js_list_fds}, {"socketInodes", js_socket_inodes}, {"iterLoad", js_iter_load}, {"iterRead", js_iter_read}};
  for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
    napi_value f;
    napi_create_function(env, fns[i].name, NAPI_AUTO_LENGTH, fns[i].fn, NULL, &f);
    napi_set_named_property(env, exports, fns[i].name, f);
  }
  napi_set_named_property(env, exports, "bpfConstants", bpf_constants(env));
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
