/*
 * epoll_server.c - baseline: the benchmark's chat contract in C on edge-triggered epoll.
 *
 * Two ways of writing, chosen by --mode:
 *
 *   per-read  what a C programmer writes first: after each read() of a client, one
 *             send() per recipient with every line of that read (one segment per
 *             recipient per read);
 *   coalesce  the limit of chatd's design: lines are appended to each recipient's
 *             output buffer, and every buffer touched in a loop pass is sent once,
 *             after all the pass's events were handled (one segment per recipient
 *             per pass, however many messages reached it).
 *
 * The contract is the one bench/baselines/common.py states for the Python baselines:
 * a welcome line, every client in #lobby, `<guest-N> text` to the *other* members,
 * `/join #room`, lines over 4096 bytes refused, a reader with more than 1 MiB unsent
 * dropped.  Like the Python baselines it does not decode UTF-8, sanitise, run plugins
 * or log.  Built by bench/run.py with `cc -O2`; listens on 127.0.0.1 only.
 *
 *   epoll_server --mode coalesce|per-read --port-file FILE [--port N]
 */

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_LINE 4096
#define MAX_OUTPUT (1 << 20)
#define READ_CHUNK 65536
#define MAX_FDS 65536
#define MAX_ROOMS 4096
#define EVENTS 512

struct room {
    char name[64];
    struct conn **members;
    int count, cap;
};

struct conn {
    int fd;
    int room;          /* index into rooms */
    int slot;          /* position in the room's member array */
    int closed;
    int dirty;         /* in the flush list of this pass */
    char prefix[32];
    int prefix_len;
    char *in;          /* an unfinished line; allocated when one is pending */
    int in_len;
    int discarding;    /* inside an over-long line */
    char *out;
    size_t out_len, out_cap, out_sent;
};

static struct conn *conns[MAX_FDS];
static struct room rooms[MAX_ROOMS];
static int room_count;
static int coalesce;
static int epfd;
static unsigned long guest;
static struct conn *dirty[MAX_FDS];
static int dirty_count;
static struct conn *doomed[MAX_FDS];
static int doomed_count;
static volatile sig_atomic_t stopping;

static void on_signal(int sig) { (void)sig; stopping = 1; }

static int room_find(const char *name, size_t len) {
    for (int i = 0; i < room_count; i++)
        if (strlen(rooms[i].name) == len && memcmp(rooms[i].name, name, len) == 0) return i;
    if (room_count == MAX_ROOMS || len >= sizeof rooms[0].name) return 0;
    memcpy(rooms[room_count].name, name, len);
    rooms[room_count].name[len] = 0;
    return room_count++;
}

static void room_add(struct conn *c, int r) {
    struct room *room = &rooms[r];
    if (room->count == room->cap) {
        room->cap = room->cap ? room->cap * 2 : 16;
        room->members = realloc(room->members, sizeof *room->members * room->cap);
        if (!room->members) abort();
    }
    c->room = r;
    c->slot = room->count;
    room->members[room->count++] = c;
}

static void room_remove(struct conn *c) {
    struct room *room = &rooms[c->room];
    struct conn *last = room->members[--room->count];
    room->members[c->slot] = last;
    last->slot = c->slot;
}

/* Closed at the end of the pass: the room loop that found it may still be running. */
static void doom(struct conn *c) {
    if (c->closed) return;
    c->closed = 1;
    doomed[doomed_count++] = c;
}

/* Send what is buffered; keep the rest for EPOLLOUT. */
static void flush(struct conn *c) {
    while (c->out_sent < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_sent, c->out_len - c->out_sent, MSG_NOSIGNAL);
        if (n > 0) { c->out_sent += (size_t)n; continue; }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        doom(c);
        return;
    }
    /* All sent.  The buffer is kept for the next pass: giving it back after every
     * flush (a malloc and free per recipient per pass) cost this server ~30% of its
     * fan-out throughput in a measured run. */
    c->out_len = c->out_sent = 0;
}

static void append(struct conn *c, const char *data, size_t len) {
    if (c->closed) return;
    if (c->out_len - c->out_sent + len > MAX_OUTPUT) { doom(c); return; }
    if (c->out_sent && c->out_len + len > c->out_cap) {  /* compact first */
        memmove(c->out, c->out + c->out_sent, c->out_len - c->out_sent);
        c->out_len -= c->out_sent;
        c->out_sent = 0;
    }
    if (c->out_len + len > c->out_cap) {
        size_t cap = c->out_cap ? c->out_cap : 4096;
        while (cap < c->out_len + len) cap *= 2;
        c->out = realloc(c->out, cap);
        if (!c->out) abort();
        c->out_cap = cap;
    }
    memcpy(c->out + c->out_len, data, len);
    c->out_len += len;
}

/* per-read mode: write now, unless earlier bytes still wait (order first). */
static void send_now(struct conn *c, const char *data, size_t len) {
    if (c->closed) return;
    if (c->out_len == c->out_sent) {
        ssize_t n;
        do n = send(c->fd, data, len, MSG_NOSIGNAL); while (n < 0 && errno == EINTR);
        if (n == (ssize_t)len) return;
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) { doom(c); return; }
        if (n > 0) { data += n; len -= (size_t)n; }
    }
    append(c, data, len);
}

static void deliver(struct conn *from, const char *data, size_t len) {
    struct room *room = &rooms[from->room];
    for (int i = 0; i < room->count; i++) {
        struct conn *peer = room->members[i];
        if (peer == from) continue;
        if (coalesce) {
            append(peer, data, len);
            if (!peer->dirty && !peer->closed) { peer->dirty = 1; dirty[dirty_count++] = peer; }
        } else {
            send_now(peer, data, len);
        }
    }
}

static void reply(struct conn *c, const char *text) {
    append(c, text, strlen(text));
    flush(c);
}

/* One read()'s lines: commands at once, chat lines gathered (per-read) or appended. */
static char batch[READ_CHUNK * 2 + 4096];
static size_t batch_len;

static void line(struct conn *c, char *text, size_t len) {
    if (len && text[len - 1] == '\r') len--;
    if (!len) return;
    if (text[0] == '/') {
        if (len > 6 && memcmp(text, "/join #", 7) == 0) {
            size_t end = 6;
            while (end < len && text[end] != ' ') end++;
            if (batch_len) { deliver(c, batch, batch_len); batch_len = 0; }
            room_remove(c);
            room_add(c, room_find(text + 6, end - 6));  /* (room 0 when the table is full) */
        } else {
            reply(c, "! unknown command\n");
        }
        return;
    }
    size_t need = (size_t)c->prefix_len + len + 1;
    if (batch_len + need > sizeof batch) { deliver(c, batch, batch_len); batch_len = 0; }
    memcpy(batch + batch_len, c->prefix, (size_t)c->prefix_len);
    memcpy(batch + batch_len + c->prefix_len, text, len);
    batch[batch_len + need - 1] = '\n';
    batch_len += need;
}

static void readable(struct conn *c) {
    static char buf[READ_CHUNK];
    while (!c->closed) {
        ssize_t n = recv(c->fd, buf, sizeof buf, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        if (n <= 0) { doom(c); return; }
        char *p = buf, *end = buf + n;
        while (p < end) {
            char *nl = memchr(p, '\n', (size_t)(end - p));
            size_t part = (size_t)((nl ? nl : end) - p);
            if (c->discarding) {
                if (nl) c->discarding = 0;
            } else if (c->in_len + part > MAX_LINE) {
                c->in_len = 0;
                c->discarding = !nl;
                reply(c, "! line too long\n");
            } else if (!nl) {
                if (!c->in && !(c->in = malloc(MAX_LINE + 1))) abort();
                memcpy(c->in + c->in_len, p, part);
                c->in_len += (int)part;
            } else if (c->in_len) {
                memcpy(c->in + c->in_len, p, part);
                line(c, c->in, (size_t)c->in_len + part);
                c->in_len = 0;
            } else {
                line(c, p, part);
            }
            p = nl ? nl + 1 : end;
        }
        if (batch_len) { deliver(c, batch, batch_len); batch_len = 0; }
    }
}

static void accept_all(int listener) {
    for (;;) {
        int fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            return;  /* EAGAIN, or out of descriptors: retried on the next edge */
        }
        if (fd >= MAX_FDS) { close(fd); continue; }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct conn *c = calloc(1, sizeof *c);
        if (!c) abort();
        c->fd = fd;
        conns[fd] = c;
        unsigned long nick = ++guest;
        c->prefix_len = snprintf(c->prefix, sizeof c->prefix, "<guest-%lu> ", nick);
        room_add(c, 0);
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
                                 .data.fd = fd};
        epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
        char welcome[96];
        int n = snprintf(welcome, sizeof welcome,
                         "* Welcome to epoll-%s, guest-%lu. You are in #lobby.\n",
                         coalesce ? "coalesce" : "per-read", nick);
        send_now(c, welcome, (size_t)n);  /* no buffer unless the kernel refuses it */
    }
}

int main(int argc, char **argv) {
    const char *port_file = NULL, *mode = "coalesce";
    int port = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--mode")) mode = argv[i + 1];
        else if (!strcmp(argv[i], "--port-file")) port_file = argv[i + 1];
        else if (!strcmp(argv[i], "--port")) port = atoi(argv[i + 1]);
        else { fprintf(stderr, "usage: %s --mode coalesce|per-read --port-file F\n", argv[0]); return 2; }
    }
    if (strcmp(mode, "coalesce") && strcmp(mode, "per-read")) { fprintf(stderr, "bad --mode\n"); return 2; }
    coalesce = !strcmp(mode, "coalesce");
    room_find("#lobby", 6);
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    int listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(listener, (struct sockaddr *)&addr, sizeof addr) || listen(listener, 4096)) {
        perror("listen");
        return 1;
    }
    socklen_t alen = sizeof addr;
    getsockname(listener, (struct sockaddr *)&addr, &alen);
    epfd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event lev = {.events = EPOLLIN | EPOLLET, .data.fd = listener};
    epoll_ctl(epfd, EPOLL_CTL_ADD, listener, &lev);
    if (port_file) {
        char tmp[4096];
        snprintf(tmp, sizeof tmp, "%s.tmp", port_file);
        FILE *f = fopen(tmp, "w");
        if (!f) { perror(tmp); return 1; }
        fprintf(f, "%d\n", ntohs(addr.sin_port));
        fclose(f);
        rename(tmp, port_file);
    }

    struct epoll_event events[EVENTS];
    while (!stopping) {
        int n = epoll_wait(epfd, events, EVENTS, 1000);
        if (n < 0 && errno == EINTR) continue;
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd == listener) { accept_all(listener); continue; }
            struct conn *c = conns[fd];
            if (!c || c->closed) continue;
            if (events[i].events & EPOLLOUT) flush(c);
            if (events[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) readable(c);
        }
        for (int i = 0; i < dirty_count; i++) {  /* coalesce: one send per touched buffer */
            dirty[i]->dirty = 0;
            if (!dirty[i]->closed) flush(dirty[i]);
        }
        dirty_count = 0;
        for (int i = 0; i < doomed_count; i++) {
            struct conn *c = doomed[i];
            room_remove(c);
            conns[c->fd] = NULL;
            close(c->fd);
            free(c->in);
            free(c->out);
            free(c);
        }
        doomed_count = 0;
    }
    return 0;
}
