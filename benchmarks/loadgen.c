/* A tiny HTTP/1.1 keep-alive load generator for benchmarks/bench_serve.py.
 *
 * One thread, epoll, CONCURRENCY persistent connections to 127.0.0.1:PORT; each sends the raw
 * request read from REQUEST_FILE (request line, headers and body, as bench_serve.py writes
 * it), waits for the whole response (Content-Length framing) and sends the next one, until
 * TOTAL responses have been received. Every occurrence of the marker "@@@@@@@@@@@@" in the
 * request is replaced by the request's sequence number, zero-padded to the same width (so
 * Content-Length stays right): unique event ids for /v1/events. Every "%%%%" is replaced by
 * the sequence number modulo KEYS (default 10000), zero-padded to 4 digits: requests spread
 * over KEYS leads.
 *
 *     prox-loadgen PORT CONCURRENCY TOTAL REQUEST_FILE [MAX_SECONDS] [SEQ_OFFSET] [KEYS]
 *
 * Prints one JSON object: requests, errors (non-2xx), seconds, rps and latency percentiles
 * in ms (p50, p90, p99, max) measured from the first byte sent to the last byte received.
 * With CONCURRENCY 1 it measures sequential latency. Stops after MAX_SECONDS (default 120).
 * Build: cc -O2 -o prox-loadgen loadgen.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MARK "@@@@@@@@@@@@"
#define MARK_LEN 12
#define MAX_CONN 256
#define KEY_MARK "%%%%"
#define KEY_LEN 4

typedef struct {
    int fd;
    char *req;       /* this connection's copy of the request (markers filled per send) */
    size_t sent;     /* bytes of req sent */
    char *buf;       /* response bytes received */
    size_t len, cap;
    long need;       /* total response length once the headers are parsed, else -1 */
    int status;
    double started;
    int busy;
} conn_t;

static char *tmpl;
static size_t tmpl_len;
static size_t marks[64];
static int n_marks;
static size_t key_marks[64];
static int n_key_marks;
static long keys = 10000;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double pct(const double *v, long n, double q) { /* linear interpolation, like numpy */
    if (n == 0) return 0;
    double pos = q * (n - 1);
    long i = (long)pos;
    double f = pos - i;
    return i + 1 < n ? v[i] * (1 - f) + v[i + 1] * f : v[i];
}

static void fill(conn_t *c, long seq) {
    char digits[MARK_LEN + 2];
    snprintf(digits, sizeof digits, "%0*ld", MARK_LEN, seq % 1000000000000L);
    for (int k = 0; k < n_marks; k++) memcpy(c->req + marks[k], digits, MARK_LEN);
    char key[KEY_LEN + 2];
    snprintf(key, sizeof key, "%0*ld", KEY_LEN, (seq % keys) % 10000L);
    for (int k = 0; k < n_key_marks; k++) memcpy(c->req + key_marks[k], key, KEY_LEN);
    c->sent = 0;
    c->len = 0;
    c->need = -1;
    c->started = now();
    c->busy = 1;
}

static int parse_head(conn_t *c) { /* 1: headers complete, 0: need more, -1: unsupported */
    char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
    if (!end) return 0;
    size_t head = (size_t)(end - c->buf) + 4;
    if (c->len < 12) return -1;
    c->status = atoi(c->buf + 9);
    long body = -1;
    char *p = c->buf;
    while (p < end) {
        char *eol = memmem(p, (size_t)(end + 2 - p), "\r\n", 2);
        if (!eol) break;
        if (eol - p > 15 && strncasecmp(p, "content-length:", 15) == 0) body = atol(p + 15);
        p = eol + 2;
    }
    if (body < 0) return -1;
    c->need = (long)head + body;
    return 1;
}

static int connect_one(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0) return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s PORT CONCURRENCY TOTAL REQUEST_FILE [MAX_SECONDS] [SEQ_OFFSET] [KEYS]\n", argv[0]);
        return 2;
    }
    int port = atoi(argv[1]), conc = atoi(argv[2]);
    long total = atol(argv[3]);
    double max_seconds = argc > 5 ? atof(argv[5]) : 120.0;
    long seq_offset = argc > 6 ? atol(argv[6]) : 0;
    if (argc > 7 && atol(argv[7]) > 0) keys = atol(argv[7]);
    if (conc < 1 || conc > MAX_CONN || total < 1) return 2;
    FILE *f = fopen(argv[4], "rb");
    if (!f) { perror("request file"); return 2; }
    fseek(f, 0, SEEK_END);
    tmpl_len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    tmpl = malloc(tmpl_len);
    if (fread(tmpl, 1, tmpl_len, f) != tmpl_len) { perror("read"); return 2; }
    fclose(f);
    for (char *p = tmpl; (p = memmem(p, tmpl_len - (size_t)(p - tmpl), MARK, MARK_LEN)) && n_marks < 64;
         p += MARK_LEN)
        marks[n_marks++] = (size_t)(p - tmpl);
    for (char *p = tmpl; (p = memmem(p, tmpl_len - (size_t)(p - tmpl), KEY_MARK, KEY_LEN)) && n_key_marks < 64;
         p += KEY_LEN)
        key_marks[n_key_marks++] = (size_t)(p - tmpl);

    int ep = epoll_create1(0);
    conn_t *conns = calloc((size_t)conc, sizeof(conn_t));
    double *lat = malloc(sizeof(double) * (size_t)total);
    long issued = 0, done = 0, errors = 0;
    double t0 = now();
    for (int i = 0; i < conc; i++) {
        conn_t *c = &conns[i];
        c->fd = connect_one(port);
        if (c->fd < 0) { perror("connect"); return 1; }
        c->req = malloc(tmpl_len);
        memcpy(c->req, tmpl, tmpl_len);
        c->cap = 1 << 16;
        c->buf = malloc(c->cap);
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.u32 = (unsigned)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
        if (issued < total) fill(c, seq_offset + issued++);
    }
    struct epoll_event events[MAX_CONN];
    while (done < total) {
        if (now() - t0 > max_seconds) {
            fprintf(stderr, "loadgen: stopped after %.0f s with %ld of %ld responses\n", max_seconds, done, total);
            break;
        }
        int n = epoll_wait(ep, events, MAX_CONN, 1000);
        for (int e = 0; e < n; e++) {
            conn_t *c = &conns[events[e].data.u32];
            if (events[e].events & (EPOLLERR | EPOLLHUP)) {
                fprintf(stderr, "loadgen: connection closed by the server\n");
                return 1;
            }
            for (int progress = 1; progress && c->busy;) {
                progress = 0;
                while (c->sent < tmpl_len) { /* send what is left of the request */
                    ssize_t w = send(c->fd, c->req + c->sent, tmpl_len - c->sent, MSG_NOSIGNAL);
                    if (w > 0) { c->sent += (size_t)w; continue; }
                    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
                    perror("send");
                    return 1;
                }
                for (;;) { /* read what has arrived */
                    if (c->len == c->cap) c->buf = realloc(c->buf, c->cap *= 2);
                    ssize_t r = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
                    if (r > 0) { c->len += (size_t)r; continue; }
                    if (r == 0) { fprintf(stderr, "loadgen: server closed the connection\n"); return 1; }
                    if (errno == EAGAIN || errno == EWOULDBLOCK) break;
                    perror("recv");
                    return 1;
                }
                if (c->need < 0) {
                    int h = parse_head(c);
                    if (h < 0) { fprintf(stderr, "loadgen: response without Content-Length\n"); return 1; }
                }
                if (c->need >= 0 && (long)c->len >= c->need) {
                    if ((long)c->len > c->need) { fprintf(stderr, "loadgen: unexpected extra bytes\n"); return 1; }
                    lat[done++] = (now() - c->started) * 1000.0;
                    if (c->status < 200 || c->status > 299) {
                        if (errors == 0) fprintf(stderr, "loadgen: HTTP %d: %.*s\n", c->status, (int)(c->len > 400 ? 400 : c->len), c->buf);
                        errors++;
                    }
                    c->busy = 0;
                    if (issued < total) { fill(c, seq_offset + issued++); progress = 1; }
                }
            }
        }
    }
    double seconds = now() - t0;
    qsort(lat, (size_t)done, sizeof(double), cmp);
    printf("{\"requests\": %ld, \"errors\": %ld, \"seconds\": %.4f, \"rps\": %.1f, \"p50_ms\": %.3f, "
           "\"p90_ms\": %.3f, \"p99_ms\": %.3f, \"max_ms\": %.3f, \"concurrency\": %d}\n",
           done, errors, seconds, done / seconds, pct(lat, done, 0.50), pct(lat, done, 0.90),
           pct(lat, done, 0.99), done ? lat[done - 1] : 0.0, conc);
    return done == total && errors == 0 ? 0 : 1;
}
