// The floor of a broadcast, for `rawepoll compare --sections broadcast`: the least a server can do to
// fan one message out to N subscribers over TCP -- the same bytes, one write() per subscriber, in a
// tight loop over an array of descriptors.  What is left of a server's CPU per delivery above this is
// the server's own cost.
//
// It speaks just enough of rawepoll's protocols for the same subscribers (rawepoll bench --broadcast)
// and the same publisher (rawepoll.server.control) to drive it:
//   * a client's "SUB <topic>\n" is answered "OK SUB <topic>\n" and makes it a subscriber (of every
//     topic: the floor has one list);
//   * a control connection's "PUBLISH <topic> <length>\n<payload>" writes "MSG <topic> <payload>\n" to
//     every subscriber, then answers "OK\n"; "PING\n" is answered "PONG\n".  Nothing is buffered: a
//     write the kernel does not take whole is counted short (the subscribers then see a loss).
// With --workers W > 1, W processes accept on SO_REUSEPORT listeners of one port (the kernel spreads the
// connections over them); process 0 also serves the control socket, hands each message to the others
// over a pipe, writes it to its own subscribers, and answers OK once every worker says it is done.
//
// usage: fanout --host HOST --port PORT --control PATH [--workers W] [--status-fd N]
// It announces itself as `rawepoll serve` does: "listening on HOST:PORT" on stdout, then the JSON
// `ready` event (with every process's pid) on the status descriptor.  SIGTERM or SIGINT: exit 0.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_WORKERS 64
#define LINE 512           // bytes of a request line (client or control), its newline included
#define MAX_PAYLOAD 262144 // bytes of a published payload
#define LISTENER (-1)
#define CONTROL (-2)
#define RELAY (-3)

static volatile sig_atomic_t stopping;
static void on_signal(int signum) { (void)signum; stopping = 1; }

static void die(const char *what) { perror(what); exit(2); }

// -- one process's subscribers ----------------------------------------------------------------
static int *subs, nsubs, *slot;      // the subscribers; slot[fd]: its index in subs, or -1
static char (*lines)[LINE];          // per client fd: its unfinished request line
static int *used;                    // ... and its length
static long short_writes;

static void add_sub(int fd) { if (slot[fd] < 0) { slot[fd] = nsubs; subs[nsubs++] = fd; } }
static void drop(int ep, int fd) {
  if (slot[fd] >= 0) { int last = subs[--nsubs]; subs[slot[fd]] = last; slot[last] = slot[fd]; slot[fd] = -1; }
  used[fd] = 0; epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL); close(fd);
}

static void fan_out(const char *frame, size_t n) {
  for (int i = 0; i < nsubs; i++)
    if (write(subs[i], frame, n) != (ssize_t)n) short_writes++;
}

static void client_input(int ep, int fd) {
  char buf[LINE];
  ssize_t got = read(fd, buf, sizeof buf);
  if (got <= 0) { if (got == 0 || errno != EAGAIN) drop(ep, fd); return; }
  for (ssize_t i = 0; i < got; i++) {
    if (used[fd] == LINE) { drop(ep, fd); return; }  // a line too long
    lines[fd][used[fd]++] = buf[i];
    if (buf[i] != '\n') continue;
    char reply[LINE + 8];
    int n;
    if (used[fd] > 5 && memcmp(lines[fd], "SUB ", 4) == 0) {
      add_sub(fd);
      n = snprintf(reply, sizeof reply, "OK %.*s", used[fd], lines[fd]);
    } else {
      n = snprintf(reply, sizeof reply, "ERR only SUB\n");
    }
    used[fd] = 0;
    if (write(fd, reply, n) != n) short_writes++;
  }
}

// -- blocking helpers for the pipes and the control connection ---------------------------------------
static int read_all(int fd, void *buf, size_t n) {
  for (size_t done = 0; done < n;) {
    ssize_t got = read(fd, (char *)buf + done, n - done);
    if (got < 0 && errno == EINTR && !stopping) continue;
    if (got <= 0) return -1;
    done += got;
  }
  return 0;
}
static int write_all(int fd, const void *buf, size_t n) {
  for (size_t done = 0; done < n;) {
    ssize_t put = write(fd, (const char *)buf + done, n - done);
    if (put < 0 && errno == EINTR) continue;
    if (put < 0) return -1;
    done += put;
  }
  return 0;
}

// -- process 0: the control socket ---------------------------------------------------------------
static int workers = 1, to_worker[MAX_WORKERS], from_worker[MAX_WORKERS];
static char *frame;  // "MSG <topic> <payload>\n", built once per publish

// One control connection, served to its end (blocking: the publisher waits for each answer anyway).
static void control_client(int fd) {
  char line[LINE];
  for (;;) {
    size_t n = 0;
    for (;;) {
      if (n == sizeof line || read_all(fd, line + n, 1) < 0) { close(fd); return; }
      if (line[n++] == '\n') break;
    }
    line[n - 1] = 0;
    if (strcmp(line, "PING") == 0) { write_all(fd, "PONG\n", 5); continue; }
    char topic[256]; unsigned long length;
    if (sscanf(line, "PUBLISH %255s %lu", topic, &length) != 2 || length > MAX_PAYLOAD) {
      write_all(fd, "ERR bad request\n", 16); close(fd); return;
    }
    size_t head = (size_t)sprintf(frame, "MSG %s ", topic);
    if (read_all(fd, frame + head, length) < 0) { close(fd); return; }
    uint32_t size = (uint32_t)(head + length + 1);
    frame[size - 1] = '\n';
    for (int w = 1; w < workers; w++)
      if (write_all(to_worker[w], &size, 4) < 0 || write_all(to_worker[w], frame, size) < 0) die("relay");
    fan_out(frame, size);
    for (int w = 1; w < workers; w++) { char done; if (read_all(from_worker[w], &done, 1) < 0) die("relay"); }
    write_all(fd, "OK\n", 3);
  }
}

// -- every process: accept, subscribe, fan out -------------------------------------------------------
static void serve(int listener, int control, int relay_in, int relay_out) {
  int ep = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event ev = {.events = EPOLLIN}, ready[512];
  ev.data.fd = LISTENER; epoll_ctl(ep, EPOLL_CTL_ADD, listener, &ev);
  if (control >= 0) { ev.data.fd = CONTROL; epoll_ctl(ep, EPOLL_CTL_ADD, control, &ev); }
  if (relay_in >= 0) { ev.data.fd = RELAY; epoll_ctl(ep, EPOLL_CTL_ADD, relay_in, &ev); }
  while (!stopping) {
    int k = epoll_wait(ep, ready, 512, -1);
    for (int i = 0; i < k; i++) {
      int fd = ready[i].data.fd;
      if (fd == LISTENER) {
        for (int c; (c = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0;) {
          struct epoll_event ce = {.events = EPOLLIN, .data.fd = c};
          epoll_ctl(ep, EPOLL_CTL_ADD, c, &ce);
        }
      } else if (fd == CONTROL) {
        int c = accept4(control, NULL, NULL, SOCK_CLOEXEC);
        if (c >= 0) control_client(c);
      } else if (fd == RELAY) {
        uint32_t size;
        if (read_all(relay_in, &size, 4) < 0 || size > MAX_PAYLOAD + LINE || read_all(relay_in, frame, size) < 0) exit(0);
        fan_out(frame, size);
        write_all(relay_out, "", 1);
      } else {
        client_input(ep, fd);
      }
    }
  }
}

static int listen_on(struct addrinfo *ai, int port) {
  int s = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
  if (s < 0) die("socket");
  setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  setsockopt(s, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  if (ai->ai_family == AF_INET6) ((struct sockaddr_in6 *)ai->ai_addr)->sin6_port = htons(port);
  else ((struct sockaddr_in *)ai->ai_addr)->sin_port = htons(port);
  if (bind(s, ai->ai_addr, ai->ai_addrlen) || listen(s, 65535)) die("listen");
  return s;
}

int main(int argc, char **argv) {
  const char *host = "127.0.0.1", *path = NULL; int port = 0, status = -1;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--host")) host = argv[i + 1];
    else if (!strcmp(argv[i], "--port")) port = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--control")) path = argv[i + 1];
    else if (!strcmp(argv[i], "--workers")) workers = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--status-fd")) status = atoi(argv[i + 1]);
    else { fprintf(stderr, "fanout: unknown option %s\n", argv[i]); return 2; }
  }
  if (!path || workers < 1 || workers > MAX_WORKERS) {
    fprintf(stderr, "usage: fanout --host HOST --port PORT --control PATH [--workers W] [--status-fd N]\n");
    return 2;
  }
  struct rlimit r; getrlimit(RLIMIT_NOFILE, &r); r.rlim_cur = r.rlim_max; setrlimit(RLIMIT_NOFILE, &r);
  int fds = (int)r.rlim_cur;
  subs = malloc(fds * sizeof *subs); slot = malloc(fds * sizeof *slot);
  lines = malloc(fds * sizeof *lines); used = calloc(fds, sizeof *used);
  frame = malloc(MAX_PAYLOAD + LINE);
  if (!subs || !slot || !lines || !used || !frame) die("malloc");
  memset(slot, -1, fds * sizeof *slot);
  struct sigaction sa = {.sa_handler = on_signal};  // no SA_RESTART: epoll_wait returns EINTR
  sigaction(SIGTERM, &sa, NULL); sigaction(SIGINT, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);

  struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICHOST}, *ai;
  if (getaddrinfo(host, NULL, &hints, &ai)) { fprintf(stderr, "fanout: bad host %s\n", host); return 2; }
  int listeners[MAX_WORKERS];
  listeners[0] = listen_on(ai, port);
  struct sockaddr_storage bound; socklen_t len = sizeof bound;
  getsockname(listeners[0], (struct sockaddr *)&bound, &len);
  port = ntohs(ai->ai_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                         : ((struct sockaddr_in *)&bound)->sin_port);
  for (int w = 1; w < workers; w++) listeners[w] = listen_on(ai, port);

  unlink(path);  // a stale socket file; compare gives a fresh path
  int control = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un un = {.sun_family = AF_UNIX};
  strncpy(un.sun_path, path, sizeof un.sun_path - 1);
  if (control < 0 || bind(control, (struct sockaddr *)&un, sizeof un) || listen(control, 64)) die("control");

  pid_t pids[MAX_WORKERS]; pids[0] = getpid();
  for (int w = 1; w < workers; w++) {
    int down[2], up[2];
    if (pipe2(down, O_CLOEXEC) || pipe2(up, O_CLOEXEC)) die("pipe");
    pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      close(control);
      serve(listeners[w], -1, down[0], up[1]);
      _exit(0);
    }
    pids[w] = pid; to_worker[w] = down[1]; from_worker[w] = up[0];
    close(down[0]); close(up[1]); close(listeners[w]);
  }

  char shown[80]; inet_ntop(ai->ai_family, ai->ai_family == AF_INET6
      ? (void *)&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr : (void *)&((struct sockaddr_in *)ai->ai_addr)->sin_addr,
      shown, sizeof shown);
  int six = ai->ai_family == AF_INET6;
  printf(six ? "listening on [%s]:%d\n" : "listening on %s:%d\n", shown, port); fflush(stdout);
  if (status >= 0) {
    char event[4096]; int n = snprintf(event, sizeof event,
      six ? "{\"event\": \"ready\", \"address\": \"[%s]:%d\", \"family\": \"inet6\", \"host\": \"%s\", \"port\": %d, "
          : "{\"event\": \"ready\", \"address\": \"%s:%d\", \"family\": \"inet\", \"host\": \"%s\", \"port\": %d, ",
      shown, port, shown, port);
    n += snprintf(event + n, sizeof event - n, "\"path\": null, \"pid\": %d, \"workers\": [", pids[0]);
    for (int w = 0; w < workers; w++) n += snprintf(event + n, sizeof event - n, w ? ", %d" : "%d", pids[w]);
    n += snprintf(event + n, sizeof event - n, "], \"mode\": null}\n");
    write_all(status, event, n);
  }
  serve(listeners[0], control, -1, -1);
  for (int w = 1; w < workers; w++) kill(pids[w], SIGTERM);
  for (int w = 1; w < workers; w++) waitpid(pids[w], NULL, 0);
  unlink(path);
  fprintf(stderr, "fanout: %ld short writes\n", short_writes);
  return 0;
}
