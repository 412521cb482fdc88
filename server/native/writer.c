// writer: the comet server's socket writes for one tick, done on a thread of libuv's pool (server/batch.ts). The same
// addon holds the detached streams' epoll set (fdpool.c); the two share one state per environment (state.h).
//
// With 10,000 streams and messages to random ids, every delivery is its own send(2) on its own socket, and on this
// 2-core machine that call is ~55% of the server's busy time (perf, server/README.md): the kernel's TCP send plus,
// on loopback, the receiver's TCP input. The JavaScript thread cannot make that cheaper, but it need not wait for
// it: it hands the tick's writes to this addon as one batch (one buffer, an fd and a length per write) and goes on
// parsing the next publish while a pool thread makes the calls. One batch is in flight at a time; batch.ts keeps
// every socket of it open until the batch is done (so no fd number can be reused under the thread) and sends
// whatever the kernel did not take by the socket's own path (libuv's queue, or a detached stream's backlog), in order.
//
// send(2) with MSG_DONTWAIT | MSG_NOSIGNAL never blocks the thread and never raises SIGPIPE; a socket's result is
// the bytes the kernel took (possibly fewer than asked, or 0 when its buffer is full) or -errno, which is also
// libuv's error code on Linux.

#include <errno.h>
#include <node_api.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>

#include "state.h"

typedef struct {
  env_state_t *state;
  napi_async_work work;
  napi_ref done;  // the JS callback, called on the main thread once every send was made
  napi_ref keep;  // an array holding the batch's buffer and typed arrays until then
  const char *data;
  const int32_t *fds;
  const int32_t *lens;
  int32_t *out;
  uint32_t n;
} batch_t;

static void execute(napi_env env, void *arg) {
  (void)env;
  batch_t *b = arg;
  const char *p = b->data;
  for (uint32_t i = 0; i < b->n; i++) {
    int32_t len = b->lens[i];
    ssize_t w;
    do w = send(b->fds[i], p, (size_t)len, MSG_DONTWAIT | MSG_NOSIGNAL);
    while (w < 0 && errno == EINTR);
    if (w >= 0) b->out[i] = (int32_t)w;
    else b->out[i] = (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -errno;
    p += len;
  }
}

static void complete(napi_env env, napi_status status, void *arg) {
  batch_t *b = arg;
  b->state->busy = 0;
  napi_value cb, global, argv[1];
  napi_get_reference_value(env, b->done, &cb);
  napi_get_global(env, &global);
  napi_get_boolean(env, status == napi_ok, &argv[0]);
  napi_delete_reference(env, b->done);
  napi_delete_reference(env, b->keep);
  napi_delete_async_work(env, b->work);
  free(b);
  // An exception thrown by the callback propagates as it would from any libuv callback.
  napi_call_function(env, global, cb, 1, argv, NULL);
}

static napi_value fail(napi_env env, const char *msg) {
  napi_throw_type_error(env, "WRITER_BAD_ARGS", msg);
  return NULL;
}

static int int32_array(napi_env env, napi_value v, int32_t **out, size_t *len) {
  napi_typedarray_type type;
  void *data;
  if (napi_get_typedarray_info(env, v, &type, len, &data, NULL, NULL) != napi_ok || type != napi_int32_array) return -1;
  *out = data;
  return 0;
}

// send(data: Uint8Array, fds: Int32Array, lens: Int32Array, out: Int32Array, n: number, done: (ok) => void)
// Starts the batch's sends on the pool; `done` runs on the main thread when they are made, with out[i] filled.
static napi_value submit(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  env_state_t *state;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, (void **)&state) != napi_ok || argc != 6) return fail(env, "writer.send(data, fds, lens, out, n, done)");
  if (state->busy) {
    napi_throw_error(env, "WRITER_BUSY", "writer.send: a batch is already in flight");
    return NULL;
  }
  napi_typedarray_type type;
  size_t data_len, nfds, nlens, nout;
  void *data;
  int32_t *fds, *lens, *out;
  uint32_t n;
  napi_valuetype cbtype;
  if (napi_get_typedarray_info(env, argv[0], &type, &data_len, &data, NULL, NULL) != napi_ok || type != napi_uint8_array ||
      int32_array(env, argv[1], &fds, &nfds) || int32_array(env, argv[2], &lens, &nlens) || int32_array(env, argv[3], &out, &nout) ||
      napi_get_value_uint32(env, argv[4], &n) != napi_ok || napi_typeof(env, argv[5], &cbtype) != napi_ok || cbtype != napi_function)
    return fail(env, "writer.send(data: Uint8Array, fds: Int32Array, lens: Int32Array, out: Int32Array, n: number, done: function)");
  if (n > nfds || n > nlens || n > nout) return fail(env, "writer.send: n is larger than fds, lens or out");
  size_t total = 0;
  for (uint32_t i = 0; i < n; i++) {
    if (lens[i] < 0 || fds[i] < 0) return fail(env, "writer.send: negative fd or length");
    total += (size_t)lens[i];
  }
  if (total > data_len) return fail(env, "writer.send: the lengths add up to more than data");

  batch_t *b = calloc(1, sizeof *b);
  if (!b) {
    napi_throw_error(env, "WRITER_NOMEM", "writer.send: out of memory");
    return NULL;
  }
  b->state = state;
  b->data = data;
  b->fds = fds;
  b->lens = lens;
  b->out = out;
  b->n = n;
  napi_value keep, name;
  napi_create_array_with_length(env, 4, &keep);
  for (uint32_t i = 0; i < 4; i++) napi_set_element(env, keep, i, argv[i]);
  napi_create_string_utf8(env, "c1m:writer", NAPI_AUTO_LENGTH, &name);
  if (napi_create_reference(env, keep, 1, &b->keep) != napi_ok || napi_create_reference(env, argv[5], 1, &b->done) != napi_ok ||
      napi_create_async_work(env, NULL, name, execute, complete, b, &b->work) != napi_ok || napi_queue_async_work(env, b->work) != napi_ok) {
    if (b->work) napi_delete_async_work(env, b->work);
    if (b->done) napi_delete_reference(env, b->done);
    if (b->keep) napi_delete_reference(env, b->keep);
    free(b);
    napi_throw_error(env, "WRITER_QUEUE", "writer.send: could not queue the batch");
    return NULL;
  }
  state->busy = 1;
  return NULL;
}

static void free_state(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  free(data);
}

static void cleanup(void *arg) {
  fdpool_cleanup(arg);
}

// Per Node environment (the main thread, or a worker thread that loads the addon too): one state.
static napi_value init(napi_env env, napi_value exports) {
  env_state_t *state = calloc(1, sizeof *state);
  if (!state || napi_set_instance_data(env, state, free_state, NULL) != napi_ok) {
    free(state);
    napi_throw_error(env, "WRITER_NOMEM", "writer: could not set up");
    return NULL;
  }
  napi_value fn;
  if (napi_create_function(env, "send", NAPI_AUTO_LENGTH, submit, state, &fn) != napi_ok ||
      napi_set_named_property(env, exports, "send", fn) != napi_ok || fdpool_init(env, exports, state) != napi_ok ||
      napi_add_env_cleanup_hook(env, cleanup, state) != napi_ok) {
    napi_throw_error(env, "WRITER_INIT", "writer: could not set up");
    return NULL;
  }
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
