// What writer.c (the batch writer) and fdpool.c (the detached streams) share: one state per Node environment.
#ifndef C1M_STATE_H
#define C1M_STATE_H

#include <node_api.h>
#include <stdint.h>
#include <uv.h>

typedef struct {
  int busy;  // a batch is in flight (writer.c): wrap.ts never submits while one runs, and this enforces it

  // fdpool.c: the epoll set of detached streams, watched from libuv's loop through one poll handle.
  int epfd;              // -1 until open()
  uv_poll_t *poll;      // malloc'd: uv_close finishes after the state may be gone
  napi_env env;
  napi_ref on_events;    // the JS dispatcher
  napi_ref keep;         // the event and input arrays, kept alive while the pool is open
  napi_async_context ctx;
  int32_t *events;       // [fd, kind, a, b] per event, filled before each dispatch
  uint32_t max_events;
  uint8_t *input;        // bytes read from streams in one dispatch (DATA events point into it)
  uint32_t input_len;
  uint8_t *interest;     // per fd: the epoll events asked for (IN/OUT bits below), so a change needs no lookup
  uint32_t interest_len;
  char *str_buf;         // sendStr's UTF-8 buffer (per environment: worker threads run at the same time)
} env_state_t;

napi_status fdpool_init(napi_env env, napi_value exports, env_state_t *state);
void fdpool_cleanup(env_state_t *state);

#endif
