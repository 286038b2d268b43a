// wanfwd: the packet mover of the WAN emulator (see README.md). It owns one TUN device in the
// forwarding namespace; the namespace's policy routing sends every packet that arrives from a site
// into that device. wanfwd reads each IPv4 packet, drops it with the loss probability of its
// direction, and writes it back into the TUN device once its one-way delay (plus jitter) has
// passed; the kernel then routes it out to the destination site, through that site's tbf.
// Packets are delayed, never terminated: both TCP ends see the full round trip.
//
// One FIFO per destination site, ordered by release time (jitter never reorders a direction), its
// packets in a byte arena; reads drain the device until EAGAIN, releases write every due packet in
// one pass, and ppoll sleeps until the earliest head is due (nanosecond timeout). On a lossless
// link the device takes TCP segmentation offload: the kernel hands over (and takes back) packets
// of up to 64 KiB, so a read moves up to ~44 segments. Loss is per segment, so on a lossy link
// offload is off and every read is one wire packet.
//
// Control on stdin, one command a line; each is answered with one line on stdout:
//   set DELAY_US JITTER_US LOSS_PPM    every direction (LOSS_PPM 0 turns offload on)
//   cut | heal                         drop everything (and what is queued) | forward again
//   stats                              {"forwarded":N,"bytes":N,"lost":N,"overflow":N,"cut":N,"queued":N}
// Usage: wanfwd TUN_NAME   (prints "ready" once the device exists)
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#define MAX_SITES 64
#define VNET_HDR 10 /* struct virtio_net_hdr before each packet */
#define MAX_PACKET (VNET_HDR + 65536)
#define RING_SLOTS 32768
#define ARENA_BYTES (64u << 20) /* per destination */
#define READ_BURST 256

typedef struct {
  uint64_t release_ns;
  uint32_t off, len;
} slot_meta;

typedef struct {
  slot_meta *meta;
  unsigned char *data;
  uint32_t head, count;
  uint32_t arena_head, arena_tail; /* bytes in use: [head, tail) modulo wrap */
  uint64_t last_release_ns;
} ring;

static ring rings[MAX_SITES];
static uint64_t delay_ns, jitter_ns, loss_ppm;
static int cut;
static uint64_t n_forwarded, n_bytes, n_lost, n_overflow, n_cut;
static uint64_t rng = 0x9e3779b97f4a7c15ULL;

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static uint64_t next_rand(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}

static ring *ring_of(int site) {
  ring *r = &rings[site];
  if (r->meta == NULL) {
    r->meta = calloc(RING_SLOTS, sizeof(slot_meta));
    r->data = malloc(ARENA_BYTES);
    if (r->meta == NULL || r->data == NULL) {
      perror("wanfwd: alloc");
      exit(1);
    }
  }
  return r;
}

/** The destination site of an IPv4 packet (after its vnet header): the third octet of 198.18.S.x. */
static int site_of(const unsigned char *p, ssize_t len) {
  if (len < VNET_HDR + 20 || (p[VNET_HDR] >> 4) != 4) return -1;
  return p[VNET_HDR + 18] % MAX_SITES;
}

/** Where `len` bytes fit in the arena after the tail (wrapping to 0), or -1 if full. */
static int64_t arena_alloc(ring *r, uint32_t len) {
  uint32_t head = r->arena_head, tail = r->arena_tail;
  if (r->count == 0) {
    r->arena_head = r->arena_tail = 0;
    head = tail = 0;
  }
  if (tail >= head) {
    if (ARENA_BYTES - tail >= len) return tail;
    if (head > len) return 0;
    return -1;
  }
  return head - tail > len ? (int64_t)tail : -1;
}

static void enqueue(const unsigned char *p, ssize_t len, uint64_t now) {
  int site = site_of(p, len);
  if (site < 0) return;
  if (cut) {
    n_cut++;
    return;
  }
  if (loss_ppm > 0 && next_rand() % 1000000ULL < loss_ppm) {
    n_lost++;
    return;
  }
  ring *r = ring_of(site);
  int64_t off = r->count == RING_SLOTS ? -1 : arena_alloc(r, (uint32_t)len);
  if (off < 0) {
    n_overflow++;
    return;
  }
  uint64_t release = now + delay_ns;
  if (jitter_ns > 0) release = release - jitter_ns + next_rand() % (2 * jitter_ns + 1);
  if (release < r->last_release_ns) release = r->last_release_ns;
  r->last_release_ns = release;
  uint32_t i = (r->head + r->count) % RING_SLOTS;
  r->meta[i].release_ns = release;
  r->meta[i].off = (uint32_t)off;
  r->meta[i].len = (uint32_t)len;
  memcpy(r->data + off, p, (size_t)len);
  r->arena_tail = (uint32_t)off + (uint32_t)len;
  r->count++;
}

/** Writes every due packet; returns the earliest release still pending (UINT64_MAX: none). */
static uint64_t release_due(int fd, uint64_t now) {
  uint64_t next = UINT64_MAX;
  for (int s = 0; s < MAX_SITES; s++) {
    ring *r = &rings[s];
    while (r->count > 0 && r->meta[r->head].release_ns <= now) {
      slot_meta *m = &r->meta[r->head];
      ssize_t w = write(fd, r->data + m->off, m->len);
      if (w < 0 && (errno == EAGAIN || errno == EINTR)) break;
      if (w == (ssize_t)m->len) {
        n_forwarded++;
        n_bytes += (uint64_t)(m->len - VNET_HDR);
      }
      r->arena_head = m->off + m->len;
      r->head = (r->head + 1) % RING_SLOTS;
      r->count--;
    }
    if (r->count > 0 && r->meta[r->head].release_ns < next) next = r->meta[r->head].release_ns;
  }
  return next;
}

static void flush_all(void) {
  for (int s = 0; s < MAX_SITES; s++) {
    n_cut += rings[s].count;
    rings[s].count = 0;
  }
}

static uint64_t queued(void) {
  uint64_t q = 0;
  for (int s = 0; s < MAX_SITES; s++) q += rings[s].count;
  return q;
}

static int tun_fd;

static void set_offload(int on) {
  unsigned long flags = on ? (TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6) : 0;
  if (ioctl(tun_fd, TUNSETOFFLOAD, flags) < 0) perror("wanfwd: TUNSETOFFLOAD");
}

static void command(char *line) {
  unsigned long long d, j, l;
  if (sscanf(line, "set %llu %llu %llu", &d, &j, &l) == 3) {
    delay_ns = d * 1000ULL;
    jitter_ns = j * 1000ULL;
    if (jitter_ns > delay_ns) jitter_ns = delay_ns;
    loss_ppm = l;
    set_offload(loss_ppm == 0);
    printf("ok\n");
  } else if (strncmp(line, "cut", 3) == 0) {
    cut = 1;
    flush_all();
    printf("ok\n");
  } else if (strncmp(line, "heal", 4) == 0) {
    cut = 0;
    printf("ok\n");
  } else if (strncmp(line, "stats", 5) == 0) {
    printf("{\"forwarded\":%llu,\"bytes\":%llu,\"lost\":%llu,\"overflow\":%llu,\"cut\":%llu,\"queued\":%llu}\n",
           (unsigned long long)n_forwarded, (unsigned long long)n_bytes, (unsigned long long)n_lost,
           (unsigned long long)n_overflow, (unsigned long long)n_cut, (unsigned long long)queued());
  } else {
    printf("error unknown command\n");
  }
  fflush(stdout);
}

static int open_tun(const char *name) {
  int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    perror("wanfwd: open /dev/net/tun");
    exit(1);
  }
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI | IFF_VNET_HDR;
  strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
    perror("wanfwd: TUNSETIFF");
    exit(1);
  }
  return fd;
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: wanfwd TUN_NAME\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  rng ^= (uint64_t)getpid() << 32 ^ now_ns();
  int fd = open_tun(argv[1]);
  tun_fd = fd;
  fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
  printf("ready\n");
  fflush(stdout);
  static unsigned char buf[MAX_PACKET];
  char line[256];
  size_t line_len = 0;
  uint64_t next = UINT64_MAX;
  for (;;) {
    struct pollfd pfd[2] = {{.fd = fd, .events = POLLIN}, {.fd = 0, .events = POLLIN}};
    struct timespec ts, *tsp = NULL;
    if (next != UINT64_MAX) {
      uint64_t now = now_ns();
      uint64_t wait = next > now ? next - now : 0;
      ts.tv_sec = (time_t)(wait / 1000000000ULL);
      ts.tv_nsec = (long)(wait % 1000000000ULL);
      tsp = &ts;
    }
    if (ppoll(pfd, 2, tsp, NULL) < 0 && errno != EINTR) {
      perror("wanfwd: ppoll");
      return 1;
    }
    if (pfd[0].revents & POLLIN) {
      uint64_t now = now_ns();
      for (int i = 0; i < READ_BURST; i++) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n <= 0) break;
        enqueue(buf, n, now);
      }
    }
    if (pfd[1].revents & (POLLIN | POLLHUP)) {
      ssize_t n = read(0, line + line_len, sizeof line - 1 - line_len);
      if (n == 0) return 0; // the controller went away: so does the link
      if (n > 0) {
        line_len += (size_t)n;
        line[line_len] = 0;
        char *nl;
        while ((nl = strchr(line, '\n')) != NULL) {
          *nl = 0;
          command(line);
          size_t rest = line_len - (size_t)(nl + 1 - line);
          memmove(line, nl + 1, rest);
          line_len = rest;
          line[line_len] = 0;
        }
        if (line_len == sizeof line - 1) line_len = 0;
      }
    }
    next = release_due(fd, now_ns());
  }
}
