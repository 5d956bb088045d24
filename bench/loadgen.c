/*
 * loadgen.c - the load generator of the chatd benchmark (built and run by bench/run.py).
 *
 * Theory of operation
 * -------------------
 * One process, one epoll loop (edge-triggered), N non-blocking client sockets to
 * 127.0.0.1:PORT.  A Python load generator would measure itself, not the server:
 * this one takes about 5 M delivered lines/s on one core of the reference machine
 * (kernel receive work included) and reports its own CPU use, so bench/run.py can
 * reject a run it throttled.
 *
 *   setup    connect all clients in batches (CONNECT_BATCH handshakes in flight),
 *            wait for each client's first line (the welcome), send `/join #bench-G`
 *            when there are several groups, then wait until the server has been
 *            quiet for QUIET ms (every join notice drained), bounded by -S.
 *   traffic  `closed`: each sender keeps W messages in flight and sends the next
 *            one when its oldest has reached every other member of its group.
 *            `rate`: senders send R messages/s each, round robin on one schedule
 *            (send i of the whole run is due at t0 + i / (S * R)).
 *            The first -W seconds are warm-up; the next -d seconds are measured.
 *   drain    no more sends; wait until every message sent reached every other
 *            member of its group (bounded by -D), then report.
 *   idle     (mode `idle`) connect and settle as above, print {"connected": n},
 *            keep reading until stdin closes or a signal arrives (bounded by -H),
 *            so the harness can read the server's RSS with N idle clients.  A server
 *            that admits clients slowly gets measured at the count reached by -S.
 *
 * Receivers read with 256 KiB buffers; against a server that sends one small segment
 * per message they also wait between reads (-i, see "read batching" below), so the
 * load generator is not the bottleneck.  At the window's edges it samples its own
 * CPU time, the server's (-P) and every core's /proc/stat counters.
 *
 * With -I every client speaks IRC: it registers (`NICK b<i>`, `USER`), joins `#bench-G`
 * after the `001` (earlier lines, e.g. NOTICE AUTH, are skipped) and counts as
 * welcomed at the `366` that ends the channel's NAMES (it is in the channel then), answers the server's PING with PONG, and sends `PRIVMSG #bench-G :<token>`.
 * With -O NAME:PASSWORD (IRC) every sender also sends `OPER NAME PASSWORD` and
 * `MODE b<i> +F` after its welcome: ngIRCd's relaxed flood protection, for IRC operators.
 *
 * With -J every client speaks jsonl (docs/protocols.md): a data line is the request
 * `{"cmd":"say","text":"<token> xxx"}` carrying the same text as a line-protocol line,
 * a room is joined with `{"cmd":"join","room":"#bench-G"}`; the welcome is the first
 * object.  Deliveries are `message` objects: the token is found in them as in any line.
 * With -X every client speaks jsonl over WebSocket (RFC 6455): after the TCP (and TLS)
 * handshake it sends an HTTP/1.1 upgrade (`GET /`, a Sec-WebSocket-Key, an Origin
 * naming the server's own host), checks the 101 and its Sec-WebSocket-Accept, then
 * sends each jsonl request as one masked text frame (no trailing newline: what a
 * browser sends).  Server frames are parsed (unmasked; fragmented messages joined;
 * PING answered with PONG; a CLOSE is a lost client, its code and reason logged) and
 * the payload of text messages goes through the same line splitter as a TCP stream:
 * a frame holding several jsonl lines counts each, a line may span frames, and the
 * end of a message ends its last line.  permessage-deflate is never offered.
 *
 * With -L every client speaks TLS (OpenSSL, no certificate check: loopback, our own
 * servers): the handshake is driven from the same edges, reads go through SSL_read
 * until it wants more (no short-read shortcut: a record can wait inside the session).
 *
 * Clients are split evenly into G groups: client i is in group i % G.  Senders are
 * clients 0..S-1, so sender s is in group s % G and is the (s / G)-th sender there.
 *
 * Each data line carries a token `#B:<sender>:<seq>:<send_ns>` (CLOCK_MONOTONIC, this
 * process's clock, so latency needs no clock sync) padded to -l bytes.  A receiver
 * finds the token anywhere in a line (chatd prefixes `<nick> `) and ignores lines
 * without one.  Per (receiver, sender) it keeps the last sequence number:
 *   seq == last + 1   delivered in order;
 *   seq >  last + 1   `reordered` (a jump), the skipped numbers count as `lost`;
 *   seq <= last       `duplicated` (seen before, or arrived after a jump);
 * and at the end every sequence number a sender sent but a receiver never reached
 * counts as `lost`.  A token from a sender of another group, or a sender's own line
 * echoed back, counts as `misrouted`.  A correct server scores 0 on all of these.
 *
 * Latency is receive time minus send time, recorded for deliveries received in the
 * measured window into a log-linear histogram (1/64 relative precision, like
 * HdrHistogram with 2 significant digits), so percentiles cost no per-sample memory.
 *
 * Safety: it only connects to 127.0.0.0/8, opens at most MAX_CLIENTS sockets and
 * stops by itself (-T bounds the whole run).  Output: one JSON object on stdout;
 * progress and errors on stderr.
 */

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>

#define MAX_CLIENTS 100000
#define READ_BUF (256 * 1024)  /* one recv() batch: many lines per syscall */
#define PARTIAL_MAX 512        /* longest line kept across reads; data lines are < 300 B */
#define SENDER_OUT 16384       /* a sender's output buffer: room for ~200 queued lines */
#define JOIN_OUT 64            /* everyone else only ever sends `/join #bench-N` */
#define IRC_OUT 512            /* ... or, with -I, NICK/USER, JOIN and PONGs; with -X,
                                  the upgrade request, the framed join and PONGs */
#define HTTP_MAX 2048          /* -X: the longest upgrade response (status + headers) */
#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  /* RFC 6455 section 1.3 */
#define WS_CONT 0x0
#define WS_TEXT 0x1
#define WS_BINARY 0x2
#define WS_CLOSE 0x8
#define WS_PING 0x9
#define WS_PONG 0xA
#define MAX_EVENTS 1024
#define WINDOW_MAX 64          /* closed mode: most messages in flight per sender (2^n) */
#define CONNECT_BATCH 512      /* handshakes (connect + welcome) in flight at once */
#define TOKEN "#B:"
#define BATCH_LINES 3.0        /* lines per read at or below which reads are batched */
#define IDLE_GRACE_S 30.0      /* idle mode: settling time allowed after the setup deadline */

/* Latency histogram: values < 128 ns exact, then 64 sub-buckets per power of two. */
#define HIST_SUB 64
#define HIST_BUCKETS (128 + 58 * HIST_SUB)

enum mode { MODE_CLOSED, MODE_RATE, MODE_IDLE };
enum cstate { C_FREE, C_CONNECTING, C_TLS, C_UPGRADE, C_WELCOME, C_READY, C_CLOSED };
enum phase { P_SETUP, P_SETTLE, P_WARMUP, P_MEASURE, P_DRAIN, P_DONE };

struct client {
    int fd;
    uint32_t group;          /* i % G, precomputed: no division on the per-line path */
    uint32_t slot;           /* i / G: a sender's index among its group's senders */
    uint8_t state;
    uint8_t discarding;      /* inside an over-long line: drop bytes up to '\n' */
    uint8_t dirty;           /* on the flush list */
    uint16_t partial_len;
    char *out;               /* pending output (allocated on first use) */
    SSL *ssl;                /* -L: the client's TLS session (NULL: plain TCP) */
    uint32_t out_len, out_off, out_cap;
    /* -X: the frame being read.  ws_hdr gathers a header split across reads; then
     * ws_left payload bytes of opcode ws_op follow (ws_msg_op: the message's data
     * opcode, for continuation frames); a control frame's payload goes to ws_ctl. */
    char *http;              /* -X: the upgrade response so far (NULL after it) */
    uint64_t ws_left;
    uint16_t http_len;
    uint8_t ws_in_payload, ws_op, ws_msg_op, ws_fin, ws_hdr_len, ws_ctl_len;
    uint8_t ws_hdr[14];
    uint8_t ws_ctl[125];
    char partial[PARTIAL_MAX];
};

struct sender {
    uint32_t next_seq;       /* sequence number of the next message (first is 1) */
    uint32_t oldest;         /* closed mode: oldest message not yet seen by everyone */
    uint8_t queued;          /* closed mode: on the ready list */
};

/* -- options ----------------------------------------------------------------------- */

static struct {
    const char *addr;
    int port;
    uint32_t clients, senders, groups, window;
    double rate, duration, warmup, settle_max, drain_max, hold_max, timeout;
    uint32_t line_bytes, quiet_ms, source_ips, batch_us;
    uint32_t connect_batch;  /* -C: handshakes (connect + welcome) in flight at once */
    int server_pid;
    int tls;                 /* -L: connect with TLS (the certificate is not checked) */
    int irc;                 /* -I: speak IRC (register, JOIN, PRIVMSG, PONG) */
    int jsonl;               /* -J (and -X): speak jsonl (say, join requests) */
    int ws;                  /* -X: jsonl over WebSocket (upgrade, frames) */
    const char *oper;        /* -O NAME:PASSWORD: IRC senders become operators, +F */
    enum mode mode;
} opt = {
    .addr = "127.0.0.1", .port = 0, .clients = 100, .senders = 5, .groups = 1, .window = 1,
    .rate = 10.0, .duration = 5.0, .warmup = 1.0, .settle_max = 120.0, .drain_max = 10.0,
    .hold_max = 300.0, .timeout = 900.0, .line_bytes = 64, .quiet_ms = 300, .source_ips = 1,
    .batch_us = 0, .server_pid = 0, .mode = MODE_CLOSED, .connect_batch = CONNECT_BATCH,
};

/* -- state ------------------------------------------------------------------------- */

static struct client *clients;
static SSL_CTX *tls_ctx;
static struct sender *senders;
static uint32_t *last_seq;          /* [receiver * per_group + sender's slot]: last seq seen */
static uint32_t *remaining;         /* closed mode: [sender * WINDOW_MAX + seq % WINDOW_MAX]:
                                       receivers still to get that message */
static uint32_t per_group;          /* most senders any group has */
static uint32_t *dirty_list, n_dirty;
static uint32_t *ready_list, n_ready;
static int epfd = -1;
static struct sockaddr_in server_addr;
static char rbuf[READ_BUF];
static volatile sig_atomic_t got_signal;

static enum phase phase = P_SETUP;
static uint64_t t_begin, now;
static uint64_t last_rx;            /* time of the last byte received (settle) */
static uint32_t next_connect, in_handshake, welcomed, connected;
static int connect_cut;             /* idle mode: the setup deadline stopped new connects */

/* counters (whole run unless noted) */
static uint64_t total_sent, total_delivered, expected_deliveries, other_lines;
static uint64_t lost_gap, duplicated, reordered, misrouted, disconnected, send_stalled;
static uint64_t recv_calls, recv_bytes, poll_calls;
static uint64_t ws_frames_in, ws_pings;  /* -X: data frames received, PINGs answered */
static uint32_t mask_state = 0x9e3779b9u;  /* -X: xorshift32 for the client frames' masks */
static uint64_t rate_index;         /* rate mode: sends scheduled so far */
static uint64_t hist[HIST_BUCKETS], lat_count, lat_max, lat_sum;
static uint64_t lat_ewma;           /* running mean delivery latency (read batching) */
static int batch_active, batch_decided;
static double lines_per_read_unbatched;
static uint64_t traffic_recvs, traffic_deliv;
static int measuring;

/* window snapshots */
static uint64_t ws_time, we_time, ws_sent, we_sent, ws_deliv, we_deliv, ws_recvs, we_recvs;
static double ws_cpu, we_cpu, ws_srv_cpu = -1, we_srv_cpu = -1;
static uint64_t t_settled, t_drain_end, t_traffic;
static const char *error_msg;
static char error_buf[256];

/* -- small helpers ----------------------------------------------------------------- */

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static double secs(uint64_t ns) { return (double)ns / 1e9; }

static void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(error_buf, sizeof error_buf, fmt, ap);
    va_end(ap);
    if (!error_msg) {
        error_msg = error_buf;
        fprintf(stderr, "loadgen: %s\n", error_buf);
    }
    phase = P_DONE;
}

static void die(const char *what)
{
    fprintf(stderr, "loadgen: %s: %s\n", what, strerror(errno));
    exit(2);
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    if (!p)
        die("calloc");
    return p;
}

static double own_cpu(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

/* Per-CPU tick counters from /proc/stat: [cpu][0] user+nice+system, [1] irq+softirq,
 * [2] idle+iowait, [3] steal.  Process times exclude interrupt time, and on loopback
 * the receive path of every send() runs as softirq on the sender's core, so the
 * harness needs these to see how busy each core really was. */
#define MAX_CPUS 64
static uint64_t cpu_ws[MAX_CPUS][4], cpu_we[MAX_CPUS][4];
static int n_cpus;

static void cpu_ticks(uint64_t out[MAX_CPUS][4])
{
    FILE *f = fopen("/proc/stat", "re");
    char line[512];
    int n = 0;
    if (!f)
        return;
    while (fgets(line, sizeof line, f)) {
        unsigned cpu;
        unsigned long long v[8] = {0};
        if (strncmp(line, "cpu", 3) != 0 || line[3] < '0' || line[3] > '9')
            continue;
        if (sscanf(line, "cpu%u %llu %llu %llu %llu %llu %llu %llu %llu", &cpu, &v[0], &v[1],
                   &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]) != 9 || cpu >= MAX_CPUS)
            continue;
        out[cpu][0] = v[0] + v[1] + v[2];
        out[cpu][1] = v[5] + v[6];
        out[cpu][2] = v[3] + v[4];
        out[cpu][3] = v[7];
        if ((int)cpu + 1 > n)
            n = (int)cpu + 1;
    }
    fclose(f);
    n_cpus = n;
}

/* utime + stime of the server (-P), from /proc/PID/stat; -1 if unknown. */
static double server_cpu(void)
{
    char path[64], buf[2048];
    if (opt.server_pid <= 0)
        return -1;
    snprintf(path, sizeof path, "/proc/%d/stat", opt.server_pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    char *p = strrchr(buf, ')');  /* comm may contain spaces; fields restart after ')' */
    if (!p)
        return -1;
    unsigned long long utime = 0, stime = 0;
    /* field 3 is the first after ')'; utime and stime are fields 14 and 15 */
    if (sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
               &utime, &stime) != 2)
        return -1;
    return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

static uint32_t group_size(uint32_t g)
{
    return opt.clients / opt.groups + (g < opt.clients % opt.groups ? 1 : 0);
}

/* -- latency histogram ------------------------------------------------------------- */

static unsigned hist_index(uint64_t v)
{
    if (v < 128)
        return (unsigned)v;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);  /* >= 7 */
    unsigned shift = msb - 6;                           /* v >> shift is in [64, 127] */
    unsigned idx = 128 + (shift - 1) * HIST_SUB + (unsigned)((v >> shift) - 64);
    return idx < HIST_BUCKETS ? idx : HIST_BUCKETS - 1;
}

/* Upper bound of a bucket's range, so a percentile is never under-reported. */
static uint64_t hist_value(unsigned idx)
{
    if (idx < 128)
        return idx;
    unsigned shift = (idx - 128) / HIST_SUB + 1;
    uint64_t base = (uint64_t)((idx - 128) % HIST_SUB + 64) << shift;
    return base + ((uint64_t)1 << shift) - 1;
}

static void hist_record(uint64_t ns)
{
    hist[hist_index(ns)]++;
    lat_count++;
    lat_sum += ns;
    if (ns > lat_max)
        lat_max = ns;
}

static double hist_percentile_us(double q)
{
    if (!lat_count)
        return 0;
    uint64_t rank = (uint64_t)(q * (double)lat_count);
    if (rank >= lat_count)
        rank = lat_count - 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += hist[i];
        if (seen > rank) {
            uint64_t v = hist_value(i);
            return (double)(v < lat_max ? v : lat_max) / 1000.0;
        }
    }
    return (double)lat_max / 1000.0;
}

/* -- output ------------------------------------------------------------------------ */

static void mark_dirty(uint32_t id)
{
    if (!clients[id].dirty) {
        clients[id].dirty = 1;
        dirty_list[n_dirty++] = id;
    }
}

/* Append to a client's output buffer; 0 if it is full (the caller decides). */
static int out_append(uint32_t id, const char *data, uint32_t len)
{
    struct client *c = &clients[id];
    if (!c->out) {
        c->out_cap = (id < opt.senders) ? SENDER_OUT : (opt.irc || opt.ws) ? IRC_OUT : JOIN_OUT;
        c->out = xcalloc(1, c->out_cap);
    }
    if (c->out_off && c->out_len + len > c->out_cap) {  /* compact */
        memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
        c->out_len -= c->out_off;
        c->out_off = 0;
    }
    if (c->out_len + len > c->out_cap)
        return 0;
    memcpy(c->out + c->out_len, data, len);
    c->out_len += len;
    mark_dirty(id);
    return 1;
}

static void client_lost(uint32_t id, const char *why)
{
    struct client *c = &clients[id];
    if (c->state == C_CLOSED)
        return;
    if (c->state == C_CONNECTING || c->state == C_TLS || c->state == C_UPGRADE ||
        c->state == C_WELCOME)
        in_handshake--;
    free(c->http);
    c->http = NULL;
    c->state = C_CLOSED;
    disconnected++;
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    if (c->ssl) {
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    close(c->fd);
    c->fd = -1;
    if (disconnected <= 5)
        fprintf(stderr, "loadgen: client %u lost: %s\n", id, why);
}

static void flush_client(uint32_t id)
{
    struct client *c = &clients[id];
    while (c->ssl && c->state != C_CLOSED && c->out_off < c->out_len) {
        int n = SSL_write(c->ssl, c->out + c->out_off, (int)(c->out_len - c->out_off));
        if (n > 0) {
            c->out_off += (uint32_t)n;
            continue;
        }
        int err = SSL_get_error(c->ssl, n);
        if (err == SSL_ERROR_WANT_WRITE || err == SSL_ERROR_WANT_READ)
            return;  /* an edge calls us again */
        client_lost(id, "TLS write failed");
        return;
    }
    while (!c->ssl && c->state != C_CLOSED && c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n > 0) {
            c->out_off += (uint32_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return;  /* the EPOLLOUT edge calls us again */
        } else {
            client_lost(id, strerror(errno));
            return;
        }
    }
    c->out_off = c->out_len = 0;
}

static void flush_dirty(void)
{
    for (uint32_t i = 0; i < n_dirty; i++) {
        clients[dirty_list[i]].dirty = 0;
        flush_client(dirty_list[i]);
    }
    n_dirty = 0;
}

/* -X: the next frame mask (xorshift32: masks need not be secret from a load generator,
 * only present, RFC 6455 section 5.3). */
static uint32_t next_mask(void)
{
    uint32_t x = mask_state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return mask_state = x;
}

/* -X: queue `payload` as one masked client frame of `opcode` (FIN set); 0 if the
 * output buffer is full.  Payloads here are short (< 64 KiB): a 16-bit length at most. */
static int ws_append(uint32_t id, uint8_t opcode, const char *payload, uint32_t len)
{
    char frame[1024];
    uint32_t n = 0;
    if (len > sizeof frame - 8)
        return 0;
    frame[n++] = (char)(0x80 | opcode);
    if (len < 126) {
        frame[n++] = (char)(0x80 | len);
    } else {
        frame[n++] = (char)(0x80 | 126);
        frame[n++] = (char)(len >> 8);
        frame[n++] = (char)(len & 0xff);
    }
    uint32_t m = next_mask();
    uint8_t key[4] = {(uint8_t)(m >> 24), (uint8_t)(m >> 16), (uint8_t)(m >> 8), (uint8_t)m};
    memcpy(frame + n, key, 4);
    n += 4;
    for (uint32_t i = 0; i < len; i++)
        frame[n + i] = (char)((uint8_t)payload[i] ^ key[i & 3]);
    return out_append(id, frame, n + len);
}

/* Queue one request line (ending in '\n') in the clients' protocol: as it is, or with
 * -X as a masked text frame without its newline (a browser sends no newline). */
static int send_request(uint32_t id, const char *line, uint32_t len)
{
    if (opt.ws)
        return ws_append(id, WS_TEXT, line, len - 1);
    return out_append(id, line, len);
}

/* The text of a data line: the token padded with 'x' to -l bytes less the newline, so
 * the line, jsonl and WebSocket modes carry the same text; 0 if it does not fit. */
static int data_text(char *text, size_t size, uint32_t s, uint32_t seq, uint64_t t)
{
    int len = snprintf(text, size, TOKEN "%u:%u:%" PRIu64 " ", s, seq, t);
    uint32_t want = opt.line_bytes;
    if (want > size)
        want = (uint32_t)size;
    while ((uint32_t)len < want - 1)
        text[len++] = 'x';
    return len;
}

/* Queue one data line from sender s; 0 if its buffer is full (rate mode counts it). */
static int send_message(uint32_t s)
{
    char line[640];
    struct sender *snd = &senders[s];
    uint64_t t = mono_ns();
    int len;
    if (opt.jsonl) {
        char text[512];
        int n = data_text(text, sizeof text, s, snd->next_seq, t);
        len = snprintf(line, sizeof line, "{\"cmd\":\"say\",\"text\":\"%.*s\"}\n", n, text);
    } else {
        len = opt.irc ? snprintf(line, sizeof line, "PRIVMSG #bench-%u :", clients[s].group) : 0;
        len += snprintf(line + len, sizeof line - (size_t)len, TOKEN "%u:%u:%" PRIu64 " ", s,
                        snd->next_seq, t);
        uint32_t want = opt.line_bytes;
        if (want > 512)
            want = 512;
        while ((uint32_t)len < want - 1 - (uint32_t)opt.irc)
            line[len++] = 'x';
        if (opt.irc)
            line[len++] = '\r';
        line[len++] = '\n';
    }
    if (!send_request(s, line, (uint32_t)len))
        return 0;
    if (opt.mode == MODE_CLOSED)
        remaining[(uint64_t)s * WINDOW_MAX + (snd->next_seq & (WINDOW_MAX - 1))] =
            group_size(clients[s].group) - 1;
    snd->next_seq++;
    total_sent++;
    expected_deliveries += group_size(clients[s].group) - 1;
    return 1;
}

static int sending(void) { return phase == P_WARMUP || phase == P_MEASURE; }

static void closed_refill(uint32_t s)
{
    struct sender *snd = &senders[s];
    while (sending() && clients[s].state == C_READY &&
           snd->next_seq - snd->oldest < opt.window) {
        if (!send_message(s))
            break;  /* cannot happen with W lines < SENDER_OUT; retried on next completion */
    }
}

static void run_ready_senders(void)
{
    for (uint32_t i = 0; i < n_ready; i++) {
        senders[ready_list[i]].queued = 0;
        closed_refill(ready_list[i]);
    }
    n_ready = 0;
}

static void rate_schedule(void)
{
    double per_s = opt.rate * opt.senders;
    while (sending()) {
        uint64_t due = t_traffic + (uint64_t)((double)rate_index * 1e9 / per_s);
        if (due > now)
            break;
        uint32_t s = (uint32_t)(rate_index % opt.senders);
        if (clients[s].state == C_READY && !send_message(s))
            send_stalled++;  /* the server is not reading fast enough for this rate */
        rate_index++;
    }
}

static uint64_t rate_next_due(void)
{
    return t_traffic + (uint64_t)((double)rate_index * 1e9 / (opt.rate * opt.senders));
}

/* -- input ------------------------------------------------------------------------- */

/* Parse a decimal number at *p; advances *p.  Returns 0 if no digit. */
static int parse_u64(const char **p, const char *end, uint64_t *out)
{
    const char *q = *p;
    uint64_t v = 0;
    while (q < end && *q >= '0' && *q <= '9')
        v = v * 10 + (uint64_t)(*q++ - '0');
    if (q == *p)
        return 0;
    *p = q;
    *out = v;
    return 1;
}

static void on_delivered(uint32_t s, uint32_t seq)
{
    if (opt.mode != MODE_CLOSED)
        return;
    struct sender *snd = &senders[s];
    if (seq < snd->oldest || seq >= snd->next_seq)
        return;
    uint32_t *ring = &remaining[(uint64_t)s * WINDOW_MAX];
    uint32_t *slot = &ring[seq & (WINDOW_MAX - 1)];
    if (*slot && --*slot == 0 && seq == snd->oldest) {
        while (snd->oldest < snd->next_seq &&
               ring[snd->oldest & (WINDOW_MAX - 1)] == 0)
            snd->oldest++;
        if (!snd->queued) {
            snd->queued = 1;
            ready_list[n_ready++] = s;
        }
    }
}

/* The token's position: "#B:" anywhere in the line.  memchr() for '#' (SIMD in glibc)
 * then two byte checks: this is the hottest loop of the process, and the token is
 * almost always the first '#' (chatd: "<nick> #B:...", the baselines likewise). */
static const char *find_token(const char *line, size_t len)
{
    const char *p = line, *end = line + len;
    while (end - p >= 3 && (p = memchr(p, '#', (size_t)(end - p - 2))) != NULL) {
        if (p[1] == 'B' && p[2] == ':')
            return p;
        p++;
    }
    return NULL;
}

/* -I: answer a PING (PONG with its parameters); 1 if the line was one. */
static int irc_ping(uint32_t r, const char *line, size_t len)
{
    if (len < 5 || memcmp(line, "PING ", 5) != 0)
        return 0;
    while (len && line[len - 1] == '\r')
        len--;
    char pong[IRC_OUT / 2];
    int n = snprintf(pong, sizeof pong, "PONG %.*s\r\n", (int)(len - 5 > 200 ? 200 : len - 5),
                     line + 5);
    out_append(r, pong, (uint32_t)n);
    return 1;
}

/* -I: the welcome is the 001 numeric (`:server 001 nick ...`); then join, and
 * senders with -O become operators with ngIRCd's relaxed flood protection (+F). */
static int irc_welcome(uint32_t r, const char *line, size_t len)
{
    const char *sp = memchr(line, ' ', len);
    if (!sp || (size_t)(line + len - sp) < 5 || memcmp(sp, " 001 ", 5) != 0)
        return 0;
    char out[IRC_OUT];
    int n = snprintf(out, sizeof out, "JOIN #bench-%u\r\n", clients[r].group);
    if (opt.oper && r < opt.senders) {
        const char *colon = strchr(opt.oper, ':');
        n += snprintf(out + n, sizeof out - (size_t)n, "OPER %.*s %s\r\nMODE b%u +F\r\n",
                      (int)(colon - opt.oper), opt.oper, colon + 1, r);
    }
    out_append(r, out, (uint32_t)n);
    return 1;
}

/* -I: the 366 (end of NAMES) of a #bench channel: the JOIN is done. */
static int irc_joined(const char *line, size_t len)
{
    const char *sp = memchr(line, ' ', len);
    return sp && (size_t)(line + len - sp) >= 5 && memcmp(sp, " 366 ", 5) == 0 &&
           memmem(sp, (size_t)(line + len - sp), " #bench-", 8) != NULL;
}

static void handle_line(uint32_t r, const char *line, size_t len)
{
    struct client *c = &clients[r];
    if (opt.irc && irc_ping(r, line, len))
        return;
    if (opt.irc && c->state == C_WELCOME) {
        /* Ready once in the channel: the 366 (end of NAMES) that answers its JOIN. */
        if (irc_welcome(r, line, len) || !irc_joined(line, len))
            return;  /* registration replies, notices, the welcome, the JOIN echo */
        c->state = C_READY;
        in_handshake--;
        welcomed++;
        return;
    }
    if (c->state == C_WELCOME) {  /* the first line a server sends is its welcome */
        c->state = C_READY;
        in_handshake--;
        welcomed++;
        if (opt.groups > 1) {
            char join[JOIN_OUT];
            int n = opt.jsonl
                ? snprintf(join, sizeof join, "{\"cmd\":\"join\",\"room\":\"#bench-%u\"}\n",
                           c->group)
                : snprintf(join, sizeof join, "/join #bench-%u\n", c->group);
            send_request(r, join, (uint32_t)n);
        }
        return;
    }
    const char *tok = find_token(line, len);
    if (!tok) {
        other_lines++;
        return;
    }
    const char *p = tok + sizeof TOKEN - 1, *end = line + len;
    uint64_t sid, seq, sent_ns;
    if (!parse_u64(&p, end, &sid) || p >= end || *p++ != ':' || !parse_u64(&p, end, &seq) ||
        p >= end || *p++ != ':' || !parse_u64(&p, end, &sent_ns)) {
        other_lines++;
        return;
    }
    if (sid >= opt.senders || sid == r || clients[sid].group != c->group) {
        misrouted++;
        return;
    }
    uint32_t *last = &last_seq[(uint64_t)r * per_group + clients[sid].slot];
    if (seq == (uint64_t)*last + 1) {
        *last = (uint32_t)seq;
    } else if (seq > (uint64_t)*last + 1) {
        reordered++;
        lost_gap += seq - *last - 1;
        *last = (uint32_t)seq;
    } else {
        duplicated++;
        return;
    }
    total_delivered++;
    if (now >= sent_ns) {
        uint64_t lat = now - sent_ns;
        lat_ewma = lat_ewma - lat_ewma / 1024 + lat / 1024;
        if (measuring)
            hist_record(lat);
    }
    on_delivered((uint32_t)sid, (uint32_t)seq);
}

/* Split a received chunk into lines, carrying an unfinished line over to the next read. */
static void handle_bytes(uint32_t r, const char *data, size_t n)
{
    struct client *c = &clients[r];
    const char *p = data, *end = data + n;
    while (p < end && c->state != C_CLOSED) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl) {  /* keep the tail for the next read */
            size_t tail = (size_t)(end - p);
            if (c->discarding || c->partial_len + tail > PARTIAL_MAX) {
                c->discarding = 1;
                c->partial_len = 0;
            } else {
                memcpy(c->partial + c->partial_len, p, tail);
                c->partial_len += (uint16_t)tail;
            }
            return;
        }
        size_t len = (size_t)(nl - p);
        if (c->discarding) {  /* end of an over-long line (never a data line) */
            c->discarding = 0;
            other_lines++;
        } else if (c->partial_len) {
            if (c->partial_len + len <= PARTIAL_MAX) {
                memcpy(c->partial + c->partial_len, p, len);
                handle_line(r, c->partial, c->partial_len + len);
            } else {
                other_lines++;
            }
            c->partial_len = 0;
        } else {
            handle_line(r, p, len);
        }
        p = nl + 1;
    }
}

/* -- WebSocket (-X) ---------------------------------------------------------------- */

/* The Sec-WebSocket-Key of client `id`: 16 bytes derived from its number (any 16 bytes
 * will do: the key proves the server speaks WebSocket, it is no secret), base64. */
static void ws_key(uint32_t id, char out[25])
{
    uint8_t raw[16];
    uint64_t x = 0x9e3779b97f4a7c15ull * (id + 1);
    for (int i = 0; i < 16; i++) {
        x ^= x >> 29;
        x *= 0xbf58476d1ce4e5b9ull;
        raw[i] = (uint8_t)(x >> 56);
    }
    EVP_EncodeBlock((unsigned char *)out, raw, 16);
}

/* The Sec-WebSocket-Accept the server must answer for client `id` (RFC 6455 4.2.2). */
static void ws_accept(uint32_t id, char out[29])
{
    char key_guid[25 + sizeof WS_GUID];
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int digest_len = 0;
    ws_key(id, key_guid);
    memcpy(key_guid + 24, WS_GUID, sizeof WS_GUID);
    EVP_Digest(key_guid, strlen(key_guid), digest, &digest_len, EVP_sha1(), NULL);
    EVP_EncodeBlock((unsigned char *)out, digest, (int)digest_len);
}

/* The upgrade request: GET / with the key and an Origin naming the server itself
 * (a same-origin page: what chatd's websocket listener accepts by default). */
static void ws_send_upgrade(uint32_t id)
{
    char key[25], req[IRC_OUT];
    ws_key(id, key);
    int n = snprintf(req, sizeof req,
                     "GET / HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                     "Sec-WebSocket-Version: 13\r\nOrigin: %s://%s:%d\r\n\r\n",
                     opt.addr, opt.port, key, opt.tls ? "https" : "http", opt.addr, opt.port);
    out_append(id, req, (uint32_t)n);
}

/* A header's value in an HTTP head (names compared case-insensitively); NULL if absent. */
static const char *http_header(const char *head, const char *name, size_t *len)
{
    size_t name_len = strlen(name);
    for (const char *line = strstr(head, "\r\n"); line; line = strstr(line, "\r\n")) {
        line += 2;
        if (strncasecmp(line, name, name_len) == 0 && line[name_len] == ':') {
            const char *v = line + name_len + 1, *end = strstr(v, "\r\n");
            while (*v == ' ' || *v == '\t')
                v++;
            *len = end ? (size_t)(end - v) : strlen(v);
            while (*len && (v[*len - 1] == ' ' || v[*len - 1] == '\t'))
                (*len)--;
            return v;
        }
    }
    return NULL;
}

static void ws_frames(uint32_t id, const char *data, size_t n);

/* Gather the upgrade response; at its end check the 101 and the accept key, then the
 * bytes after it are frames.  A refused upgrade fails the run: it is a setup error. */
static void ws_upgrade_bytes(uint32_t id, const char *data, size_t n)
{
    struct client *c = &clients[id];
    if (!c->http)
        c->http = xcalloc(1, HTTP_MAX + 1);
    size_t take = n < (size_t)(HTTP_MAX - c->http_len) ? n : (size_t)(HTTP_MAX - c->http_len);
    memcpy(c->http + c->http_len, data, take);
    c->http_len += (uint16_t)take;
    c->http[c->http_len] = '\0';
    char *end = strstr(c->http, "\r\n\r\n");
    if (!end) {
        if (c->http_len >= HTTP_MAX)
            fail("client %u: upgrade response longer than %d bytes", id, HTTP_MAX);
        return;
    }
    size_t head_len = (size_t)(end - c->http) + 4;
    size_t rest = c->http_len - head_len + (n - take);  /* frames already received */
    char status[80], expected[29];
    size_t status_len = strcspn(c->http, "\r\n"), got_len = 0;
    snprintf(status, sizeof status, "%.*s", (int)status_len, c->http);
    *end = '\0';
    if (strncmp(c->http, "HTTP/1.1 101", 12) != 0) {
        fail("client %u: upgrade refused: %s", id, status);
        return;
    }
    ws_accept(id, expected);
    const char *got = http_header(c->http, "Sec-WebSocket-Accept", &got_len);
    if (!got || got_len != 28 || memcmp(got, expected, 28) != 0) {
        fail("client %u: wrong Sec-WebSocket-Accept (%.*s, expected %s)", id,
             got ? (int)got_len : 0, got ? got : "", expected);
        return;
    }
    const char *ext = http_header(c->http, "Sec-WebSocket-Extensions", &got_len);
    if (ext) {
        fail("client %u: the server chose an extension it was not offered: %.*s", id,
             (int)got_len, ext);
        return;
    }
    c->state = C_WELCOME;
    /* Frames that came with the response: from the response buffer, then this read. */
    char *tail = NULL;
    if (rest) {
        tail = xcalloc(1, rest);
        size_t from_buf = c->http_len - head_len;
        memcpy(tail, c->http + head_len, from_buf);
        memcpy(tail + from_buf, data + take, n - take);
    }
    free(c->http);
    c->http = NULL;
    c->http_len = 0;
    if (tail) {
        ws_frames(id, tail, rest);
        free(tail);
    }
}

/* Header length a frame needs, once its first two bytes are known. */
static uint8_t ws_header_len(const uint8_t *h)
{
    uint8_t len7 = h[1] & 0x7f;
    return (uint8_t)(2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + ((h[1] & 0x80) ? 4 : 0));
}

/* A complete frame header in ws_hdr: start its payload. */
static int ws_begin_frame(uint32_t id)
{
    struct client *c = &clients[id];
    const uint8_t *h = c->ws_hdr;
    uint8_t len7 = h[1] & 0x7f;
    uint64_t len = len7;
    if (len7 == 126)
        len = (uint64_t)h[2] << 8 | h[3];
    else if (len7 == 127)
        for (int i = 0; i < 8; i++)
            len = len << 8 | h[2 + i];
    c->ws_fin = h[0] >> 7;
    c->ws_op = h[0] & 0x0f;
    c->ws_left = len;
    c->ws_hdr_len = 0;
    c->ws_ctl_len = 0;
    if (h[1] & 0x80) {
        client_lost(id, "a masked server frame (RFC 6455 5.1 forbids it)");
        return 0;
    }
    if (c->ws_op >= 0x8 && (len > sizeof c->ws_ctl || !c->ws_fin)) {
        client_lost(id, "a control frame over 125 bytes or fragmented");
        return 0;
    }
    if (c->ws_op == WS_TEXT || c->ws_op == WS_BINARY)
        c->ws_msg_op = c->ws_op;
    else if (c->ws_op != WS_CONT && c->ws_op < 0x8) {
        client_lost(id, "a frame with an unknown opcode");
        return 0;
    }
    if (c->ws_op < 0x8)
        ws_frames_in++;
    c->ws_in_payload = 1;
    return 1;
}

/* A frame's payload is complete: answer a PING, report a CLOSE, end a message. */
static void ws_end_frame(uint32_t id)
{
    struct client *c = &clients[id];
    c->ws_in_payload = 0;
    switch (c->ws_op) {
    case WS_PING:
        ws_pings++;
        ws_append(id, WS_PONG, (const char *)c->ws_ctl, c->ws_ctl_len);
        return;
    case WS_PONG:
        return;
    case WS_CLOSE: {
        char why[200];
        unsigned code = c->ws_ctl_len >= 2 ? (unsigned)c->ws_ctl[0] << 8 | c->ws_ctl[1] : 1005;
        snprintf(why, sizeof why, "close frame %u: %.*s", code,
                 c->ws_ctl_len > 2 ? (int)c->ws_ctl_len - 2 : 0, (const char *)c->ws_ctl + 2);
        client_lost(id, why);
        return;
    }
    default:
        break;
    }
    if (!c->ws_fin)
        return;
    /* The end of a message ends its last line, with or without a newline. */
    if (c->ws_msg_op == WS_TEXT && c->partial_len && !c->discarding) {
        uint16_t len = c->partial_len;
        c->partial_len = 0;
        handle_line(id, c->partial, len);
    } else if (c->ws_msg_op == WS_BINARY) {
        other_lines++;
    }
    c->partial_len = 0;
    c->discarding = 0;
}

/* Received bytes of an upgraded connection: frame headers, then payloads; text goes to
 * the line splitter straight from the read buffer. */
static void ws_frames(uint32_t id, const char *data, size_t n)
{
    struct client *c = &clients[id];
    const char *p = data, *end = data + n;
    while (p < end && c->state != C_CLOSED) {
        if (!c->ws_in_payload) {
            uint8_t need = c->ws_hdr_len < 2 ? 2 : ws_header_len(c->ws_hdr);
            while (c->ws_hdr_len < need && p < end) {
                c->ws_hdr[c->ws_hdr_len++] = (uint8_t)*p++;
                if (c->ws_hdr_len == 2)
                    need = ws_header_len(c->ws_hdr);
            }
            if (c->ws_hdr_len < need || !ws_begin_frame(id))
                return;
            if (c->ws_left == 0)
                ws_end_frame(id);
            continue;
        }
        size_t take = (size_t)(end - p) < c->ws_left ? (size_t)(end - p) : (size_t)c->ws_left;
        if (c->ws_op >= 0x8) {
            memcpy(c->ws_ctl + c->ws_ctl_len, p, take);
            c->ws_ctl_len += (uint8_t)take;
        } else if (c->ws_msg_op == WS_TEXT) {
            handle_bytes(id, p, take);
        }
        p += take;
        c->ws_left -= take;
        if (c->ws_left == 0)
            ws_end_frame(id);
    }
}

/* Received bytes, whatever the protocol: a stream of lines, or WebSocket. */
static void received(uint32_t id, const char *data, size_t n)
{
    if (!opt.ws)
        handle_bytes(id, data, n);
    else if (clients[id].state == C_UPGRADE)
        ws_upgrade_bytes(id, data, n);
    else
        ws_frames(id, data, n);
}

/* TLS: read records until OpenSSL wants more from the socket (it has then read the
 * socket to EAGAIN: what EPOLLET needs).  No short-read shortcut: a record may wait
 * inside the TLS session. */
static void read_tls(uint32_t id)
{
    struct client *c = &clients[id];
    while (c->state != C_CLOSED) {
        int n = SSL_read(c->ssl, rbuf, (int)sizeof rbuf);
        recv_calls++;
        if (n > 0) {
            recv_bytes += (uint64_t)n;
            now = mono_ns();
            last_rx = now;
            received(id, rbuf, (size_t)n);
            continue;
        }
        int err = SSL_get_error(c->ssl, n);
        if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE)
            return;
        client_lost(id, err == SSL_ERROR_ZERO_RETURN ? "closed by the server"
                                                     : "TLS read failed");
        return;
    }
}

static void read_client(uint32_t id)
{
    struct client *c = &clients[id];
    if (c->ssl) {
        read_tls(id);
        return;
    }
    while (c->state != C_CLOSED) {
        ssize_t n = recv(c->fd, rbuf, sizeof rbuf, 0);
        recv_calls++;
        if (n > 0) {
            recv_bytes += (uint64_t)n;
            now = mono_ns();
            last_rx = now;
            received(id, rbuf, (size_t)n);
            /* A short read emptied the socket.  Under EPOLLET any later arrival queues
             * a new event, so skip the recv() that would only say EAGAIN: that halves
             * this loop's syscalls when servers send one small segment per message. */
            if ((size_t)n < sizeof rbuf)
                return;
        } else if (n == 0) {
            client_lost(id, "closed by the server");
            return;
        } else if (errno == EINTR) {
            continue;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            return;
        } else {
            client_lost(id, strerror(errno));
            return;
        }
    }
}

/* -- connecting -------------------------------------------------------------------- */

static void start_connects(void)
{
    while (next_connect < opt.clients && in_handshake < opt.connect_batch) {
        uint32_t id = next_connect++;
        struct client *c = &clients[id];
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            fail("socket() for client %u: %s (raise RLIMIT_NOFILE?)", id, strerror(errno));
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (opt.source_ips > 1) {  /* spread over 127.0.0.1..K for servers with per-IP limits */
            struct sockaddr_in src = {.sin_family = AF_INET};
            src.sin_addr.s_addr = htonl(0x7f000001u + id % opt.source_ips);
            setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
            if (bind(fd, (struct sockaddr *)&src, sizeof src) < 0) {
                fail("bind source address: %s", strerror(errno));
                close(fd);
                return;
            }
        }
        c->fd = fd;
        c->state = C_CONNECTING;
        in_handshake++;
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
                                 .data.u32 = id};
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
            die("epoll_ctl");
        if (connect(fd, (struct sockaddr *)&server_addr, sizeof server_addr) < 0 &&
            errno != EINPROGRESS) {
            fail("connect client %u: %s", id, strerror(errno));
            return;
        }
    }
}

/* The connection is up (TCP, and TLS if any): the server's welcome is next.  With -I
 * the client registers first; with -X it asks for the upgrade first. */
static void await_welcome(uint32_t id)
{
    clients[id].state = C_WELCOME;
    if (opt.ws) {
        clients[id].state = C_UPGRADE;
        ws_send_upgrade(id);
        return;
    }
    if (opt.irc) {
        char reg[IRC_OUT / 2];
        int n = snprintf(reg, sizeof reg, "NICK b%u\r\nUSER b 0 * :bench\r\n", id);
        out_append(id, reg, (uint32_t)n);
    }
}

static void connect_done(uint32_t id)
{
    struct client *c = &clients[id];
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    if (err) {
        fail("connect client %u: %s", id, strerror(err));
        return;
    }
    connected++;
    if (!opt.tls) {
        await_welcome(id);
        return;
    }
    c->ssl = SSL_new(tls_ctx);
    if (!c->ssl || !SSL_set_fd(c->ssl, c->fd)) {
        fail("SSL_new for client %u", id);
        return;
    }
    SSL_set_connect_state(c->ssl);
    c->state = C_TLS;
}

/* Drive a client's TLS handshake; it becomes C_WELCOME when done. */
static void tls_handshake(uint32_t id)
{
    struct client *c = &clients[id];
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        await_welcome(id);
        return;
    }
    int err = SSL_get_error(c->ssl, r);
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE)
        return;
    char why[160];
    snprintf(why, sizeof why, "TLS handshake: %s", ERR_reason_error_string(ERR_get_error()));
    client_lost(id, why);
}

static void handle_event(uint32_t id, uint32_t events)
{
    struct client *c = &clients[id];
    if (c->state == C_CONNECTING) {
        if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
            return;
        connect_done(id);
        if (c->state != C_WELCOME && c->state != C_TLS)
            return;
    }
    if (c->state == C_TLS) {
        tls_handshake(id);
        if (c->state != C_WELCOME)
            return;
    }
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        read_client(id);
    if ((events & EPOLLOUT) && c->state != C_CLOSED && c->out_off < c->out_len)
        flush_client(id);
}

/* -- read batching ----------------------------------------------------------------- */

/*
 * Read batching (-i MAX_US, closed mode only).  A server that writes each message as
 * its own small segment costs this process one recv() and one ACK (sent, and processed
 * for the server's socket, on this core) per delivery: as much work as the server's
 * own send(), so the load generator would saturate first and measure itself.  For
 * such a server (at most BATCH_LINES lines per read in the first half of the warm-up,
 * read as soon as data arrives) the loop then polls at most once per interval, so
 * segments pile up in the socket buffers and one recv() returns many lines.
 *
 * The interval is a quarter of the mean delivery latency, capped at MAX_US.  Such a
 * server works message by message, and in a closed loop the latency is the time it
 * needs for the work in flight: holding completions back for a quarter of it leaves
 * it about three quarters of its queue, so it is never starved.  A server that
 * coalesces (many lines per segment) is never made to wait: it takes its whole queue
 * in one pass, and any delay here would idle it.  Latency includes the wait; rate
 * mode (the latency scenarios) never batches.
 */
static void decide_batching(void)
{
    uint64_t reads = recv_calls - traffic_recvs, lines = total_delivered - traffic_deliv;
    lines_per_read_unbatched = reads ? (double)lines / (double)reads : 0;
    batch_active = opt.batch_us && lines_per_read_unbatched <= BATCH_LINES;
    fprintf(stderr, "loadgen: %.1f lines per read: read batching %s\n",
            lines_per_read_unbatched, batch_active ? "on" : "off");
}

static void batch_wait(int *timeout_ms, int last_events, uint64_t last_poll)
{
    if (!batch_active)
        return;
    uint64_t interval = (uint64_t)opt.batch_us * 1000u;
    if (lat_ewma / 4 < interval)
        interval = lat_ewma / 4;
    if (!interval || last_events >= MAX_EVENTS || phase < P_WARMUP || *timeout_ms == 0)
        return;
    uint64_t t = mono_ns();
    if (t - last_poll >= interval)
        return;
    uint64_t wait = interval - (t - last_poll);
    if (*timeout_ms > 0 && wait > (uint64_t)*timeout_ms * 1000000u)
        wait = (uint64_t)*timeout_ms * 1000000u;
    struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)wait};
    nanosleep(&ts, NULL);
    *timeout_ms = 0;  /* whatever is ready now is what this batch gets */
}

/* -- phases ------------------------------------------------------------------------ */

static void phase_marker(const char *name)
{
    fprintf(stderr, "@phase %s %.3f\n", name, secs(now - t_begin));
}

static void begin_traffic(void)
{
    t_settled = now;
    t_traffic = now;
    traffic_recvs = recv_calls;
    traffic_deliv = total_delivered;
    phase = P_WARMUP;
    phase_marker("warmup");
    if (opt.mode == MODE_CLOSED)
        for (uint32_t s = 0; s < opt.senders; s++)
            closed_refill(s);
}

static void advance_phase(void)
{
    switch (phase) {
    case P_SETUP:
        if (!connect_cut && next_connect < opt.clients)
            start_connects();
        if (!error_msg && in_handshake == 0 && (next_connect == opt.clients || connect_cut)) {
            phase = P_SETTLE;
            phase_marker("settle");
        }
        break;
    case P_SETTLE:
        if (now - last_rx >= (uint64_t)opt.quiet_ms * 1000000u && n_dirty == 0) {
            if (opt.mode == MODE_IDLE) {
                t_settled = now;
                phase = P_DONE;
            } else {
                begin_traffic();
            }
        }
        break;
    case P_WARMUP:
        if (opt.mode == MODE_CLOSED && !batch_decided &&
            now >= t_traffic + (uint64_t)(opt.warmup * 0.5e9)) {
            batch_decided = 1;
            decide_batching();
        }
        if (now >= t_traffic + (uint64_t)(opt.warmup * 1e9)) {
            phase = P_MEASURE;
            measuring = 1;
            ws_time = now;
            ws_sent = total_sent;
            ws_deliv = total_delivered;
            ws_recvs = recv_calls;
            ws_cpu = own_cpu();
            ws_srv_cpu = server_cpu();
            cpu_ticks(cpu_ws);
            phase_marker("measure");
        }
        break;
    case P_MEASURE:
        if (now >= ws_time + (uint64_t)(opt.duration * 1e9)) {
            measuring = 0;
            we_time = now;
            we_sent = total_sent;
            we_deliv = total_delivered;
            we_recvs = recv_calls;
            we_cpu = own_cpu();
            we_srv_cpu = server_cpu();
            cpu_ticks(cpu_we);
            phase = P_DRAIN;
            phase_marker("drain");
        }
        break;
    case P_DRAIN:
        if (total_delivered + lost_gap >= expected_deliveries ||
            now >= we_time + (uint64_t)(opt.drain_max * 1e9)) {
            t_drain_end = now;
            phase = P_DONE;
        }
        break;
    case P_DONE:
        break;
    }
}

/* epoll_wait timeout (ms) until the next thing this loop must do by itself. */
static int next_timeout(void)
{
    uint64_t wake = UINT64_MAX;
    switch (phase) {
    case P_SETUP:
        return 100;
    case P_SETTLE:
        wake = last_rx + (uint64_t)opt.quiet_ms * 1000000u;
        break;
    case P_WARMUP:
        wake = t_traffic + (uint64_t)(opt.warmup * 1e9);
        break;
    case P_MEASURE:
        wake = ws_time + (uint64_t)(opt.duration * 1e9);
        break;
    case P_DRAIN:
        wake = we_time + (uint64_t)(opt.drain_max * 1e9);
        break;
    case P_DONE:
        return 0;
    }
    if (opt.mode == MODE_RATE && sending()) {
        uint64_t due = rate_next_due();
        if (due < wake)
            wake = due;
    }
    if (n_dirty || n_ready)
        return 0;
    if (wake <= now)
        return 0;
    uint64_t ms = (wake - now + 999999) / 1000000;
    return ms > 100 ? 100 : (int)ms;
}

static void poll_once(int timeout_ms)
{
    static struct epoll_event events[MAX_EVENTS];
    static int last_events;
    static uint64_t last_poll;
    batch_wait(&timeout_ms, last_events, last_poll);
    int n = epoll_wait(epfd, events, MAX_EVENTS, timeout_ms);
    poll_calls++;
    last_events = n;
    last_poll = mono_ns();
    if (n < 0) {
        if (errno == EINTR)
            return;
        die("epoll_wait");
    }
    now = last_poll;
    for (int i = 0; i < n; i++) {
        uint32_t id = events[i].data.u32;
        if (id == UINT32_MAX) {  /* stdin (idle mode): EOF means "stop holding" */
            char tmp[256];
            ssize_t r = read(STDIN_FILENO, tmp, sizeof tmp);
            if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR))
                got_signal = 1;
            continue;
        }
        if (clients[id].state != C_CLOSED)
            handle_event(id, events[i].events);
    }
    now = mono_ns();
}

static void run(void)
{
    uint64_t deadline = t_begin + (uint64_t)(opt.timeout * 1e9);
    uint64_t settle_deadline = t_begin + (uint64_t)(opt.settle_max * 1e9);
    while (phase != P_DONE) {
        poll_once(next_timeout());
        if (got_signal)
            fail("interrupted by a signal");
        else if (now >= deadline)
            fail("gave up after -T %.0f s (phase %d)", opt.timeout, (int)phase);
        else if (opt.mode == MODE_IDLE && !connect_cut && phase <= P_SETTLE &&
                 now >= settle_deadline) {
            /* A server that admits clients slowly still gets its memory measured, at
             * the count it reached: stop connecting, let the rest settle. */
            connect_cut = 1;
            settle_deadline = now + (uint64_t)(IDLE_GRACE_S * 1e9);
            fprintf(stderr, "loadgen: setup deadline: stopping at %u of %u clients\n",
                    next_connect, opt.clients);
        } else if ((phase == P_SETUP || phase == P_SETTLE) && now >= settle_deadline)
            fail("setup not done after -S %.0f s: %u/%u connected, %u welcomed%s",
                 opt.settle_max, connected, opt.clients, welcomed,
                 phase == P_SETTLE ? " (server never went quiet)" : "");
        else if (disconnected && phase != P_DONE)
            fail("the server closed %" PRIu64 " connection(s)", disconnected);
        if (phase == P_DONE)
            break;
        if (opt.mode == MODE_RATE)
            rate_schedule();
        run_ready_senders();
        flush_dirty();
        advance_phase();
    }
}

/* Idle mode's one-line report (stdout), read by the harness before it measures RSS. */
static void idle_report(void)
{
    printf("{\"connected\": %u, \"requested\": %u, \"complete\": %s, \"setup_s\": %.3f, "
           "\"other_lines\": %" PRIu64 ", \"disconnected\": %" PRIu64 ", \"error\": ",
           welcomed, opt.clients, welcomed == opt.clients ? "true" : "false",
           secs((t_settled ? t_settled : now) - t_begin), other_lines, disconnected);
    if (error_msg) {
        putchar('"');
        for (const char *p = error_msg; *p; p++)
            putchar(*p == '"' || *p == '\\' ? '\'' : *p);
        printf("\"}\n");
    } else {
        printf("null}\n");
    }
    fflush(stdout);
}

static void hold_idle(void)
{
    /* stdin is the harness's "you may go" signal: EOF ends the hold. */
    fcntl(STDIN_FILENO, F_SETFL, fcntl(STDIN_FILENO, F_GETFL) | O_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.u32 = UINT32_MAX};
    int watch_stdin = epoll_ctl(epfd, EPOLL_CTL_ADD, STDIN_FILENO, &ev) == 0;
    uint64_t until = now + (uint64_t)(opt.hold_max * 1e9);
    idle_report();
    uint64_t lost_before = disconnected;
    while (!got_signal && now < until) {
        poll_once(watch_stdin ? 200 : 100);
        flush_dirty();
    }
    if (disconnected > lost_before)
        fprintf(stderr, "loadgen: %" PRIu64 " idle connection(s) closed by the server\n",
                disconnected - lost_before);
}

/* -- report ------------------------------------------------------------------------ */

static void report(void)
{
    uint64_t lost_tail = 0;
    if (opt.mode != MODE_IDLE) {
        for (uint32_t r = 0; r < opt.clients; r++)
            for (uint32_t s = clients[r].group; s < opt.senders; s += opt.groups) {
                if (s == r)
                    continue;
                uint32_t sent = senders[s].next_seq - 1;
                uint32_t got = last_seq[(uint64_t)r * per_group + clients[s].slot];
                if (sent > got)
                    lost_tail += sent - got;
            }
    }
    double elapsed = we_time > ws_time ? secs(we_time - ws_time) : 0;
    uint64_t deliveries = we_deliv - ws_deliv, sent = we_sent - ws_sent;
    double lg_cpu = we_cpu - ws_cpu;
    printf("{\"mode\": \"%s\", \"clients\": %u, \"senders\": %u, \"groups\": %u, "
           "\"window\": %u, \"rate_per_sender\": %.3f, \"line_bytes\": %u,\n",
           opt.mode == MODE_CLOSED ? "closed" : opt.mode == MODE_RATE ? "rate" : "idle",
           opt.clients, opt.senders, opt.groups, opt.window, opt.rate, opt.line_bytes);
    printf(" \"connected\": %u, \"setup_s\": %.3f, \"elapsed_s\": %.4f, \"drain_s\": %.3f,\n",
           welcomed, t_settled > t_begin ? secs(t_settled - t_begin) : 0, elapsed,
           t_drain_end > we_time && we_time ? secs(t_drain_end - we_time) : 0);
    printf(" \"deliveries\": %" PRIu64 ", \"deliveries_per_s\": %.1f, "
           "\"messages_sent\": %" PRIu64 ", \"messages_in_per_s\": %.1f,\n",
           deliveries, elapsed > 0 ? (double)deliveries / elapsed : 0, sent,
           elapsed > 0 ? (double)sent / elapsed : 0);
    printf(" \"latency_us\": {\"p50\": %.1f, \"p99\": %.1f, \"p999\": %.1f, \"max\": %.1f, "
           "\"mean\": %.1f, \"samples\": %" PRIu64 "},\n",
           hist_percentile_us(0.50), hist_percentile_us(0.99), hist_percentile_us(0.999),
           (double)lat_max / 1000.0,
           lat_count ? (double)lat_sum / (double)lat_count / 1000.0 : 0, lat_count);
    printf(" \"total_sent\": %" PRIu64 ", \"total_delivered\": %" PRIu64
           ", \"expected_deliveries\": %" PRIu64 ",\n",
           total_sent, total_delivered, expected_deliveries);
    printf(" \"lost\": %" PRIu64 ", \"duplicated\": %" PRIu64 ", \"reordered\": %" PRIu64
           ", \"misrouted\": %" PRIu64 ", \"disconnected\": %" PRIu64
           ", \"send_stalled\": %" PRIu64 ", \"other_lines\": %" PRIu64 ",\n",
           lost_gap + lost_tail, duplicated, reordered, misrouted, disconnected, send_stalled,
           other_lines);
    if (opt.ws)
        printf(" \"ws_frames_in\": %" PRIu64 ", \"ws_pings\": %" PRIu64 ",\n", ws_frames_in,
               ws_pings);
    printf(" \"recv_calls\": %" PRIu64 ", \"recv_bytes\": %" PRIu64 ", \"poll_calls\": %" PRIu64
           ", \"read_batching\": %s, \"lines_per_read_unbatched\": %.2f, "
           "\"lines_per_read\": %.2f,\n",
           recv_calls, recv_bytes, poll_calls, batch_active ? "true" : "false",
           lines_per_read_unbatched,
           we_recvs > ws_recvs ? (double)deliveries / (double)(we_recvs - ws_recvs) : 0);
    printf(" \"loadgen_cpu_s\": %.4f, \"loadgen_cpu_total_s\": %.3f, ", lg_cpu, own_cpu());
    if (ws_srv_cpu >= 0 && we_srv_cpu >= 0)
        printf("\"server_cpu_s\": %.3f, ", we_srv_cpu - ws_srv_cpu);
    else
        printf("\"server_cpu_s\": null, ");
    printf("\"clk_tck\": %ld, \"cpu_ticks\": [", sysconf(_SC_CLK_TCK));
    for (int i = 0; i < n_cpus; i++)
        printf("%s[%" PRIu64 ", %" PRIu64 ", %" PRIu64 ", %" PRIu64 "]", i ? ", " : "",
               cpu_we[i][0] - cpu_ws[i][0], cpu_we[i][1] - cpu_ws[i][1],
               cpu_we[i][2] - cpu_ws[i][2], cpu_we[i][3] - cpu_ws[i][3]);
    printf("],\n ");
    if (error_msg) {
        printf("\"error\": \"");
        for (const char *p = error_msg; *p; p++)
            putchar(*p == '"' || *p == '\\' ? '\'' : *p);
        printf("\"}\n");
    } else {
        printf("\"error\": null}\n");
    }
    fflush(stdout);
}

/* -- main -------------------------------------------------------------------------- */

static void on_signal(int sig) { (void)sig; got_signal = 1; }

static void usage(void)
{
    fprintf(stderr,
            "usage: loadgen -p PORT [-a 127.x.y.z] [-m closed|rate|idle] [-c CLIENTS]\n"
            "  [-s SENDERS] [-g GROUPS] [-w WINDOW] [-r MSGS_PER_S_PER_SENDER] [-d SECONDS]\n"
            "  [-W WARMUP_S] [-l LINE_BYTES] [-q QUIET_MS] [-S SETTLE_MAX_S] [-D DRAIN_MAX_S]\n"
            "  [-H HOLD_MAX_S] [-T TIMEOUT_S] [-b SOURCE_IPS] [-P SERVER_PID] [-i BATCH_US]\n"
            "  [-C HANDSHAKES_IN_FLIGHT] [-L (TLS)] [-I (IRC)] [-O OPER_NAME:PASSWORD (IRC senders, ngIRCd +F)]\n"
            "  [-J (jsonl)] [-X (jsonl over WebSocket)]\n");
    exit(2);
}

static double parse_double(const char *s, double lo, double hi, char flag)
{
    char *end;
    double v = strtod(s, &end);
    if (*s == '\0' || *end != '\0' || !(v >= lo && v <= hi)) {
        fprintf(stderr, "loadgen: -%c must be a number in [%g, %g], got %s\n", flag, lo, hi, s);
        exit(2);
    }
    return v;
}

static uint32_t parse_count(const char *s, uint32_t lo, uint32_t hi, char flag)
{
    return (uint32_t)parse_double(s, lo, hi, flag);
}

static void parse_args(int argc, char **argv)
{
    int ch;
    while ((ch = getopt(argc, argv, "a:p:m:c:s:g:w:r:d:W:l:q:S:D:H:T:b:P:i:C:LIJXO:h")) != -1) {
        switch (ch) {
        case 'a': opt.addr = optarg; break;
        case 'p': opt.port = (int)parse_count(optarg, 1, 65535, 'p'); break;
        case 'm':
            if (!strcmp(optarg, "closed")) opt.mode = MODE_CLOSED;
            else if (!strcmp(optarg, "rate")) opt.mode = MODE_RATE;
            else if (!strcmp(optarg, "idle")) opt.mode = MODE_IDLE;
            else usage();
            break;
        case 'c': opt.clients = parse_count(optarg, 2, MAX_CLIENTS, 'c'); break;
        case 's': opt.senders = parse_count(optarg, 1, MAX_CLIENTS, 's'); break;
        case 'g': opt.groups = parse_count(optarg, 1, MAX_CLIENTS, 'g'); break;
        case 'w': opt.window = parse_count(optarg, 1, WINDOW_MAX, 'w'); break;
        case 'r': opt.rate = parse_double(optarg, 0.001, 1e6, 'r'); break;
        case 'd': opt.duration = parse_double(optarg, 0.01, 3600, 'd'); break;
        case 'W': opt.warmup = parse_double(optarg, 0, 3600, 'W'); break;
        case 'l': opt.line_bytes = parse_count(optarg, 32, 512, 'l'); break;
        case 'q': opt.quiet_ms = parse_count(optarg, 10, 60000, 'q'); break;
        case 'S': opt.settle_max = parse_double(optarg, 1, 3600, 'S'); break;
        case 'D': opt.drain_max = parse_double(optarg, 0.1, 3600, 'D'); break;
        case 'H': opt.hold_max = parse_double(optarg, 0.1, 86400, 'H'); break;
        case 'T': opt.timeout = parse_double(optarg, 1, 86400, 'T'); break;
        case 'b': opt.source_ips = parse_count(optarg, 1, 65534, 'b'); break;
        case 'i': opt.batch_us = parse_count(optarg, 0, 100000, 'i'); break;
        case 'P': opt.server_pid = (int)parse_count(optarg, 1, 1 << 30, 'P'); break;
        case 'L': opt.tls = 1; break;
        case 'I': opt.irc = 1; break;
        case 'J': opt.jsonl = 1; break;
        case 'X': opt.ws = opt.jsonl = 1; break;
        case 'C': opt.connect_batch = parse_count(optarg, 1, CONNECT_BATCH, 'C'); break;
        case 'O':
            if (!strchr(optarg, ':'))
                usage();
            opt.oper = optarg;
            break;
        default: usage();
        }
    }
    if (!opt.port || optind != argc || (opt.irc && opt.jsonl))
        usage();
    if (inet_pton(AF_INET, opt.addr, &server_addr.sin_addr) != 1 ||
        (ntohl(server_addr.sin_addr.s_addr) >> 24) != 127) {
        fprintf(stderr, "loadgen: refusing %s: only 127.0.0.0/8 (loopback) is allowed\n",
                opt.addr);
        exit(2);
    }
    server_addr.sin_family = AF_INET;
    server_addr.sin_port = htons((uint16_t)opt.port);
    if (opt.mode == MODE_IDLE)
        opt.senders = 0;
    if (opt.groups > opt.clients / 2) {
        fprintf(stderr, "loadgen: -g %u leaves groups with fewer than 2 clients\n", opt.groups);
        exit(2);
    }
    if (opt.senders > opt.clients) {
        fprintf(stderr, "loadgen: -s %u is more than -c %u\n", opt.senders, opt.clients);
        exit(2);
    }
    if (opt.mode != MODE_IDLE && opt.senders == 0)
        usage();
}

int main(int argc, char **argv)
{
    parse_args(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    clients = xcalloc(opt.clients, sizeof *clients);
    if (opt.tls) {
        tls_ctx = SSL_CTX_new(TLS_client_method());
        if (!tls_ctx)
            die("SSL_CTX_new");
        SSL_CTX_set_verify(tls_ctx, SSL_VERIFY_NONE, NULL);  /* loopback, our own servers */
        SSL_CTX_set_mode(tls_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
                                  SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    }
    for (uint32_t i = 0; i < opt.clients; i++) {
        clients[i].fd = -1;
        clients[i].group = i % opt.groups;
        clients[i].slot = i / opt.groups;
    }
    senders = xcalloc(opt.senders, sizeof *senders);
    for (uint32_t s = 0; s < opt.senders; s++)
        senders[s].next_seq = senders[s].oldest = 1;
    per_group = opt.senders ? (opt.senders + opt.groups - 1) / opt.groups : 0;
    if (opt.mode != MODE_IDLE)
        last_seq = xcalloc((size_t)opt.clients * per_group, sizeof *last_seq);
    if (opt.mode == MODE_CLOSED)
        remaining = xcalloc((size_t)opt.senders * WINDOW_MAX, sizeof *remaining);
    dirty_list = xcalloc(opt.clients, sizeof *dirty_list);
    ready_list = xcalloc(opt.senders, sizeof *ready_list);
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0)
        die("epoll_create1");

    t_begin = now = last_rx = mono_ns();
    phase_marker("connect");
    start_connects();
    run();
    if (opt.mode == MODE_IDLE) {
        if (error_msg) {
            idle_report();
            return 1;
        }
        hold_idle();
        return 0;
    }
    report();
    return error_msg ? 1 : 0;
}
