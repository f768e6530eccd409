/* The C peer of rawepoll compare's echo section: an epoll echo server, level-triggered.
 *
 * Takes an already listening, non-blocking socket as descriptor 3 (the Python
 * wrapper peers/c_echo.py binds it, announces it on --status-fd and execs this),
 * accepts with accept4, reads up to 64 KiB per event and writes it back; what a
 * write does not take waits in a per-connection buffer with EPOLLOUT armed, and
 * reading pauses meanwhile.  SIGTERM ends it with status 0.  What a careful C
 * programmer writes for this job, so the floor under the Python servers.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define LISTENER 3
#define READ_SIZE 65536

struct pending { char *data; size_t len, off; };

static volatile sig_atomic_t stopping;
static void on_term(int sig) { (void)sig; stopping = 1; }

static struct pending *table;
static int table_size;

static void drop(int ep, int fd) {
    epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
    if (fd < table_size) { free(table[fd].data); table[fd].data = NULL; table[fd].len = 0; }
    close(fd);
}

static void flush_pending(int ep, int fd) {
    struct pending *p = &table[fd];
    while (p->off < p->len) {
        ssize_t n = write(fd, p->data + p->off, p->len - p->off);
        if (n < 0) { if (errno == EAGAIN) return; drop(ep, fd); return; }
        p->off += (size_t)n;
    }
    free(p->data); p->data = NULL; p->len = p->off = 0;
    struct epoll_event e = { .events = EPOLLIN, .data.fd = fd };
    epoll_ctl(ep, EPOLL_CTL_MOD, fd, &e);
}

static void echo(int ep, int fd, char *buf) {
    ssize_t got = read(fd, buf, READ_SIZE);
    if (got <= 0) { if (got < 0 && errno == EAGAIN) return; drop(ep, fd); return; }
    ssize_t off = 0;
    while (off < got) {
        ssize_t n = write(fd, buf + off, (size_t)(got - off));
        if (n < 0) {
            if (errno != EAGAIN) { drop(ep, fd); return; }
            struct pending *p = &table[fd];
            p->len = (size_t)(got - off); p->off = 0; p->data = malloc(p->len);
            memcpy(p->data, buf + off, p->len);
            struct epoll_event e = { .events = EPOLLOUT, .data.fd = fd };
            epoll_ctl(ep, EPOLL_CTL_MOD, fd, &e);
            return;
        }
        off += n;
    }
}

int main(void) {
    signal(SIGTERM, on_term);
    signal(SIGINT, on_term);
    signal(SIGPIPE, SIG_IGN);
    table_size = 1 << 20;
    table = calloc((size_t)table_size, sizeof *table);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event e = { .events = EPOLLIN, .data.fd = LISTENER }, events[1024];
    epoll_ctl(ep, EPOLL_CTL_ADD, LISTENER, &e);
    static char buf[READ_SIZE];
    int one = 1;
    while (!stopping) {
        int n = epoll_wait(ep, events, 1024, -1);
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd == LISTENER) {
                for (int k = 0; k < 64; k++) {
                    int c = accept4(LISTENER, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (c < 0) break;
                    if (c >= table_size) { close(c); continue; }
                    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct epoll_event ce = { .events = EPOLLIN, .data.fd = c };
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &ce);
                }
            } else if (events[i].events & EPOLLOUT) {
                flush_pending(ep, fd);
            } else {
                echo(ep, fd, buf);
            }
        }
    }
    return 0;
}
