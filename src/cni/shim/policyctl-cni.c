/*
 * policyctl-cni's front end (docs/design.md, "Pod lifecycle"): a small static binary that the
 * container runtime runs for each CNI call. It forwards the call as it came (the CNI_* variables
 * and stdin) to the node's policyctl agent over its unix socket, and writes back what the agent
 * answers (stdout, stderr, exit code). The agent runs the plugin's logic itself (src/cni/plugin.ts,
 * runPlugin): what a call means, its checks and its error messages live in one place.
 *
 * Why: a pod's ADD waits for this process. Starting Node for the plugin costs more than 100 ms on a
 * small VM; this binary starts in about a millisecond.
 *
 * Invariants:
 * - Fails closed: whenever this binary cannot get a complete answer from the agent (no socket, a
 *   configuration it does not fully understand, a connection closed early), it runs the Node plugin
 *   installed beside it (`node policyctl-cni.mjs` in its own folder) with the same environment and
 *   stdin, which reports the cause as a CNI error, or succeeds only on the agent's word. Only a
 *   timeout is answered here (waiting a second time would double the runtime's wait), and VERSION,
 *   which asks nothing of the agent or the node: a runtime probing plugins on a node whose agent
 *   is not up yet gets its answer without a Node process.
 * - It reads from the configuration only the transport (`socket`, `timeoutSeconds`, `cniVersion`
 *   for its own error); the agent parses and checks the configuration again.
 *
 * Protocol (one call per connection):
 *   -> "policyctl-cni 1 <env bytes> <stdin bytes>\n" <NAME=VALUE\0 ...> <stdin>
 *   <- "<exit code> <stdout bytes> <stderr bytes>\n" <stdout> <stderr>
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define DEFAULT_SOCKET "/run/policyctl/cni.sock"
#define DEFAULT_TIMEOUT_SECONDS 10.0
/* Larger inputs go to the Node plugin (no network configuration is anywhere near this). */
#define MAX_STDIN (4u << 20)
#define MAX_REPLY (16u << 20)

static char *in;
static size_t in_len;

/* ---- stdin ---- */

static void read_stdin(void) {
  size_t cap = 64 * 1024;
  in = malloc(cap + 1);
  if (!in) exit(70);
  for (;;) {
    if (in_len == cap) {
      if (cap >= MAX_STDIN * 2) break; /* the caller sees in_len > MAX_STDIN and falls back */
      cap *= 2;
      char *n = realloc(in, cap + 1);
      if (!n) exit(70);
      in = n;
    }
    ssize_t r = read(0, in + in_len, cap - in_len);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break; /* EOF, or no stdin at all (VERSION may come without) */
    in_len += (size_t)r;
  }
  in[in_len] = 0;
}

/* ---- the configuration's transport fields: a strict JSON scan of the top-level object ---- */

struct conf {
  char socket[108];
  double timeout;
  char version[32];
};

static const char *p, *end;

static void ws(void) {
  while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
}

/* A JSON string into out (NULL: skip it). \u escapes are skipped, not decoded: a field this
 * binary needs that holds one makes it fall back. Returns 0, or -1 on anything unexpected. */
static int str(char *out, size_t cap) {
  size_t n = 0;
  if (p >= end || *p != '"') return -1;
  p++;
  while (p < end && *p != '"') {
    unsigned char c = (unsigned char)*p++;
    if (c < 0x20) return -1;
    if (c == '\\') {
      if (p >= end) return -1;
      c = (unsigned char)*p++;
      switch (c) {
        case '"': case '\\': case '/': break;
        case 'b': c = '\b'; break;
        case 'f': c = '\f'; break;
        case 'n': c = '\n'; break;
        case 'r': c = '\r'; break;
        case 't': c = '\t'; break;
        case 'u':
          if (out || end - p < 4) return -1;
          p += 4;
          continue;
        default: return -1;
      }
    }
    if (out) {
      if (n + 1 >= cap) return -1;
      out[n++] = (char)c;
    }
  }
  if (p >= end) return -1;
  p++;
  if (out) out[n] = 0;
  return 0;
}

static int skip_value(int depth) {
  ws();
  if (p >= end || depth > 200) return -1;
  if (*p == '"') return str(NULL, 0);
  if (*p == '{' || *p == '[') {
    int obj = *p == '{';
    char close = obj ? '}' : ']';
    p++;
    ws();
    if (p < end && *p == close) { p++; return 0; }
    for (;;) {
      if (obj) {
        ws();
        if (str(NULL, 0)) return -1;
        ws();
        if (p >= end || *p != ':') return -1;
        p++;
      }
      if (skip_value(depth + 1)) return -1;
      ws();
      if (p >= end) return -1;
      if (*p == ',') { p++; continue; }
      if (*p == close) { p++; return 0; }
      return -1;
    }
  }
  const char *s = p;
  while (p < end && *p && strchr("-+.0123456789eEtrufalsn", *p)) p++;
  return p == s ? -1 : 0;
}

static int scan_conf(struct conf *c) {
  p = in;
  end = in + in_len;
  ws();
  if (p >= end || *p != '{') return -1;
  p++;
  ws();
  if (p < end && *p == '}') { p++; ws(); return p == end ? 0 : -1; }
  for (;;) {
    char key[32];
    ws();
    const char *k = p;
    if (str(key, sizeof key)) { /* a long or escaped key: not one of ours */
      p = k;
      if (str(NULL, 0)) return -1;
      key[0] = 0;
    }
    ws();
    if (p >= end || *p != ':') return -1;
    p++;
    ws();
    /* A repeated key: the last one counts, as with JSON.parse. */
    if (!strcmp(key, "socket")) {
      if (str(c->socket, sizeof c->socket)) return -1;
    } else if (!strcmp(key, "timeoutSeconds")) {
      char *e;
      if (p >= end || !(*p == '-' || (*p >= '0' && *p <= '9'))) return -1;
      double v = strtod(p, &e);
      if (e == p || e > end) return -1;
      p = e;
      c->timeout = v;
    } else if (!strcmp(key, "cniVersion")) {
      if (str(c->version, sizeof c->version)) return -1;
    } else if (skip_value(0)) {
      return -1;
    }
    ws();
    if (p >= end) return -1;
    if (*p == ',') { p++; continue; }
    if (*p == '}') { p++; break; }
    return -1;
  }
  ws();
  return p == end ? 0 : -1;
}

/* ---- falling back to the Node plugin ---- */

static void put(int fd, const char *s, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, s, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return;
    s += w;
    n -= (size_t)w;
  }
}

static void json_string(char *out, size_t cap, const char *s) {
  size_t n = 0;
  out[n++] = '"';
  for (; *s && n + 8 < cap; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\') { out[n++] = '\\'; out[n++] = (char)c; }
    else if (c < 0x20) n += (size_t)snprintf(out + n, cap - n, "\\u%04x", c);
    else out[n++] = (char)c;
  }
  out[n++] = '"';
  out[n] = 0;
}

/* A CNI error on stdout (and the message on stderr), exit code 1. */
static int cni_error(const char *version, int code, const char *msg) {
  char v[80], m[2048], out[2400];
  json_string(v, sizeof v, version[0] ? version : "1.1.0");
  json_string(m, sizeof m, msg);
  int n = snprintf(out, sizeof out, "{\"cniVersion\":%s,\"code\":%d,\"msg\":%s}\n", v, code, m);
  put(1, out, (size_t)n);
  put(2, msg, strlen(msg));
  put(2, "\n", 1);
  return 1;
}

static int fallback(const char *version) {
  char self[PATH_MAX], dir[PATH_MAX], node[PATH_MAX + 16], entry[PATH_MAX + 32], cache[PATH_MAX + 16];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) return cni_error(version, 11, "policyctl-cni: cannot find its own folder (/proc/self/exe) to run the Node plugin");
  self[n] = 0;
  snprintf(dir, sizeof dir, "%s", self);
  char *slash = strrchr(dir, '/');
  if (slash) *slash = 0;
  snprintf(node, sizeof node, "%s/node", dir);
  snprintf(entry, sizeof entry, "%s/policyctl-cni.mjs", dir);
  snprintf(cache, sizeof cache, "%s/cache", dir);
  /* The Node plugin reads the same stdin: replay it from memory. */
  int fd = memfd_create("policyctl-cni-stdin", 0);
  if (fd >= 0) {
    put(fd, in, in_len);
    lseek(fd, 0, SEEK_SET);
    dup2(fd, 0);
    close(fd);
  }
  setenv("NODE_COMPILE_CACHE", cache, 1);
  char *argv[] = {node, entry, NULL};
  execv(node, argv);
  char msg[PATH_MAX + 200];
  snprintf(msg, sizeof msg, "policyctl-cni: cannot reach the policyctl agent and cannot run the Node plugin %s: %s", node, strerror(errno));
  return cni_error(version, 11, msg);
}

/* ---- the call ---- */

static long long now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static int send_all(int fd, const char *s, size_t n) {
  while (n > 0) {
    ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    s += w;
    n -= (size_t)w;
  }
  return 0;
}

/* ---- VERSION ---- */

/* The Node plugin's list and latest version (src/cni/plugin.ts SUPPORTED_VERSIONS): shim.test.ts
 * compares this answer with the Node plugin's for every version and for one it does not know. */
static const char *const SUPPORTED[] = {"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"};
#define LATEST "1.1.0"

/* The answer to VERSION: the version asked for when supported, else the latest. */
static int version_answer(const char *requested) {
  const size_t count = sizeof SUPPORTED / sizeof *SUPPORTED;
  const char *v = LATEST;
  for (size_t i = 0; i < count; i++) if (!strcmp(requested, SUPPORTED[i])) v = SUPPORTED[i];
  char out[256];
  size_t n = (size_t)snprintf(out, sizeof out, "{\"cniVersion\":\"%s\",\"supportedVersions\":[", v);
  for (size_t i = 0; i < count; i++) n += (size_t)snprintf(out + n, sizeof out - n, "%s\"%s\"", i ? "," : "", SUPPORTED[i]);
  n += (size_t)snprintf(out + n, sizeof out - n, "]}\n");
  put(1, out, n);
  return 0;
}

int main(void) {
  struct conf c;
  memset(&c, 0, sizeof c);
  c.timeout = DEFAULT_TIMEOUT_SECONDS;
  read_stdin();
  const char *command = getenv("CNI_COMMAND");
  /* VERSION needs no configuration and no agent; a stdin this scan cannot read goes to the Node
   * plugin, as any other command with a configuration it cannot read, which names what is wrong. */
  if (in_len > MAX_STDIN) return fallback(c.version);
  if (command && !strcmp(command, "VERSION")) return in_len == 0 ? version_answer("") : scan_conf(&c) ? fallback(c.version) : version_answer(c.version);
  if (scan_conf(&c)) return fallback(c.version);
  if (c.socket[0] == 0) snprintf(c.socket, sizeof c.socket, "%s", DEFAULT_SOCKET);
  if (c.socket[0] != '/' || !(c.timeout > 0 && c.timeout <= 600)) return fallback(c.version);

  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return fallback(c.version);
  struct sockaddr_un a;
  memset(&a, 0, sizeof a);
  a.sun_family = AF_UNIX;
  snprintf(a.sun_path, sizeof a.sun_path, "%s", c.socket);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
    close(fd);
    return fallback(c.version);
  }

  /* The request: the CNI_* variables and stdin, as they came. */
  size_t env_len = 0;
  for (char **e = environ; *e; e++) if (!strncmp(*e, "CNI_", 4)) env_len += strlen(*e) + 1;
  char head[96];
  int hn = snprintf(head, sizeof head, "policyctl-cni 1 %zu %zu\n", env_len, in_len);
  if (send_all(fd, head, (size_t)hn)) { close(fd); return fallback(c.version); }
  for (char **e = environ; *e; e++) {
    if (strncmp(*e, "CNI_", 4)) continue;
    if (send_all(fd, *e, strlen(*e) + 1)) { close(fd); return fallback(c.version); }
  }
  if (send_all(fd, in, in_len)) { close(fd); return fallback(c.version); }
  shutdown(fd, SHUT_WR);

  /* The answer, read until the agent closes, within the configured timeout. */
  long long deadline = now_ms() + (long long)(c.timeout * 1000);
  size_t cap = 64 * 1024, len = 0;
  char *buf = malloc(cap + 1);
  if (!buf) exit(70);
  for (;;) {
    long long left = deadline - now_ms();
    if (left <= 0) {
      char msg[512];
      snprintf(msg, sizeof msg, "policyctl-cni: the policyctl agent at %s did not answer within %g s (timeoutSeconds in the conflist)", c.socket, c.timeout);
      return cni_error(c.version, 11, msg);
    }
    struct pollfd pf = {.fd = fd, .events = POLLIN};
    int r = poll(&pf, 1, left > INT_MAX ? INT_MAX : (int)left);
    if (r < 0 && errno == EINTR) continue;
    if (r == 0) continue;
    if (r < 0) { close(fd); return fallback(c.version); }
    if (len == cap) {
      if (cap >= MAX_REPLY) { close(fd); return fallback(c.version); }
      cap *= 2;
      char *n = realloc(buf, cap + 1);
      if (!n) exit(70);
      buf = n;
    }
    ssize_t got = recv(fd, buf + len, cap - len, 0);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) { close(fd); return fallback(c.version); }
    if (got == 0) break;
    len += (size_t)got;
  }
  close(fd);
  buf[len] = 0;
  /* The header line, then exactly the bytes it announces; anything else is an answer cut short
   * (an agent stopping): ask again the slow way. */
  char *nl = memchr(buf, '\n', len);
  if (!nl) return fallback(c.version);
  *nl = 0;
  int code, used = 0;
  size_t out_n, err_n;
  size_t used_head = (size_t)(nl - buf) + 1;
  if (sscanf(buf, "%d %zu %zu%n", &code, &out_n, &err_n, &used) != 3 || buf + used != nl || code < 0 || code > 255 ||
      out_n > len || err_n > len || used_head + out_n + err_n != len) {
    return fallback(c.version);
  }
  used = (int)used_head;
  put(1, buf + used, out_n);
  put(2, buf + used + out_n, err_n);
  return code;
}
