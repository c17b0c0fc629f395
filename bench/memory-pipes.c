// libzmq alone, without the server: resident memory per PUB connection after a few
// heartbeats and after many, to show libzmq's per-pipe chunks filling (bench/RESULTS.md,
// "Memory per connection (issue 14)"). A PUB binds, a child process connects N SUBs, then
// the PUB sends two-frame, 650-byte messages like the server's heartbeats.
//
//   gcc -O2 -o /tmp/memory-pipes bench/memory-pipes.c -lzmq
//   /tmp/memory-pipes 1000 300                  # N connections, K more heartbeats
//   BATCH=1024 LD_LIBRARY_PATH=/tmp/zbuild /tmp/memory-pipes 1000 300   # draft libzmq
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

static long rss_kib(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long v = 0;
  while (fgets(line, sizeof line, f))
    if (!strncmp(line, "VmRSS:", 6)) v = atol(line + 6);
  fclose(f);
  return v;
}

static void beat(void *pub) {
  char m[400];
  memset(m, 'h', sizeof m);
  zmq_send(pub, m, 400, ZMQ_SNDMORE);
  zmq_send(pub, m, 250, 0);
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: memory-pipes N K\n");
    return 2;
  }
  int n = atoi(argv[1]), k = atoi(argv[2]);
  void *ctx = zmq_ctx_new();
  zmq_ctx_set(ctx, ZMQ_IO_THREADS, 2);
  void *pub = zmq_socket(ctx, ZMQ_PUB);
  if (getenv("BATCH")) {  // ZMQ_IN_BATCH_SIZE / ZMQ_OUT_BATCH_SIZE (draft API)
    int v = atoi(getenv("BATCH"));
    if (zmq_setsockopt(pub, 101, &v, sizeof v) || zmq_setsockopt(pub, 102, &v, sizeof v))
      fprintf(stderr, "this libzmq refuses the batch options (no draft API)\n");
  }
  if (zmq_bind(pub, "tcp://127.0.0.1:31100")) {
    perror("bind");
    return 1;
  }
  sleep(1);
  long idle = rss_kib();
  pid_t child = fork();
  if (!child) {
    void *cc = zmq_ctx_new();
    zmq_ctx_set(cc, ZMQ_MAX_SOCKETS, 60000);
    for (int i = 0; i < n; i++) {
      void *s = zmq_socket(cc, ZMQ_SUB);
      zmq_setsockopt(s, ZMQ_SUBSCRIBE, "", 0);
      zmq_connect(s, "tcp://127.0.0.1:31100");
    }
    pause();
    _exit(0);
  }
  sleep(4);
  for (int i = 0; i < 3; i++) {
    beat(pub);
    usleep(100000);
  }
  sleep(1);
  printf("after 3 heartbeats: %.1f KiB per connection\n", (double)(rss_kib() - idle) / n);
  for (int i = 0; i < k; i++) {
    beat(pub);
    usleep(20000);
  }
  sleep(2);
  printf("after %d heartbeats: %.1f KiB per connection\n", k + 3,
         (double)(rss_kib() - idle) / n);
  kill(child, SIGKILL);
  waitpid(child, 0, 0);
  return 0;
}
