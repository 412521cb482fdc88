{
  "targets": [
    {
      "target_name": "writer",
      "sources": ["writer.c", "fdpool.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Werror"],
      "defines": ["NAPI_VERSION=8"]
    }
  ]
}
