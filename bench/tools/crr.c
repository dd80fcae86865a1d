/*
 * crr: TCP connect/close rate, the cost a new connection pays (SYN, SYN-ACK, ACK, FIN): what
 * NetworkPolicy rules cost, since established packets skip them.
 *
 *   crr server PORT              accept and close, forever
 *   crr client IP PORT SECONDS THREADS   connect+close in a loop; prints connections/s
 *
 * Built by bench/parts/dataplane.ts with the system C compiler; run inside lab namespaces.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static struct sockaddr_in target;
static double seconds;
static volatile long total, failures;

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

static void *client(void *arg) {
  (void)arg;
  long n = 0, bad = 0;
  double end = now() + seconds;
  struct linger lg = {1, 0}; /* RST on close: no TIME_WAIT pile-up on the client */
  while (now() < end) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0) { bad++; continue; }
    setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    if (connect(s, (struct sockaddr *)&target, sizeof target) == 0) n++; else bad++;
    close(s);
  }
  __sync_fetch_and_add(&total, n);
  __sync_fetch_and_add(&failures, bad);
  return NULL;
}

int main(int argc, char **argv) {
  if (argc == 3 && strcmp(argv[1], "server") == 0) {
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in a = {0};
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    a.sin_family = AF_INET;
    a.sin_port = htons(atoi(argv[2]));
    if (bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 4096)) { perror("crr server"); return 1; }
    printf("ready\n");
    fflush(stdout);
    for (;;) {
      int c = accept(l, NULL, NULL);
      if (c >= 0) close(c);
    }
  }
  if (argc == 6 && strcmp(argv[1], "client") == 0) {
    target.sin_family = AF_INET;
    target.sin_port = htons(atoi(argv[3]));
    if (inet_pton(AF_INET, argv[2], &target.sin_addr) != 1) { fprintf(stderr, "crr: bad address %s\n", argv[2]); return 2; }
    seconds = atof(argv[4]);
    int threads = atoi(argv[5]);
    pthread_t t[64];
    if (threads < 1 || threads > 64) { fprintf(stderr, "crr: threads must be 1-64, got %d\n", threads); return 2; }
    for (int i = 0; i < threads; i++) pthread_create(&t[i], NULL, client, NULL);
    for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
    printf("{\"connections\":%ld,\"failures\":%ld,\"seconds\":%g,\"rate\":%.1f}\n", total, failures, seconds, total / seconds);
    return 0;
  }
  fprintf(stderr, "usage: crr server PORT | crr client IP PORT SECONDS THREADS\n");
  return 2;
}
