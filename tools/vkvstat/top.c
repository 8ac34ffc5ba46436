// SPDX-License-Identifier: MIT
/*
 * top.c - `vkvstat top`: a live view in the manner of top and nvtop.
 *
 * Each screen is built as plain lines first, cut to the terminal's width,
 * then drawn over the previous one: cursor home, every line followed by
 * "erase to end of line", "erase below" last. Nothing is cleared first, so
 * nothing flickers, and nothing but ASCII and a handful of ANSI codes is
 * sent, so it works in a plain 80x24 terminal over ssh. The alternate
 * screen keeps the user's scrollback intact; the terminal is restored on
 * q, Ctrl-C, SIGTERM and SIGHUP, and given back while suspended (^Z).
 *
 * Rates (evictions and restores per second, GB/s moved between tiers) are
 * differences between two snapshots, so the first screen shows none.
 * Without a terminal on stdout (or with --once / -n) screens are printed
 * one after the other, like `top -b`.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "vkvstat.h"

const char *const vkvstat_top_sort_keys[] = {
	"committed", "inuse", "reserved", "peak", "frag", "evictions", "pid",
	"comm", NULL,
};

#define MAX_LINES 200
#define LINE_MAX_W 256
#define BAR_W 10

enum style { ST_PLAIN, ST_TITLE, ST_HEAD, ST_WARN };

struct screen {
	unsigned w, h, n;
	char line[MAX_LINES][LINE_MAX_W];
	enum style style[MAX_LINES];
};

/* One process's row and the rates against the previous screen. */
struct row {
	const struct vkvstat_proc *p;
	double ev_s, rs_s, gbs; /* < 0: not known yet */
};

/* Counters of the previous screen, by pid. */
struct prev {
	int32_t pid;
	uint64_t ev, rs, bytes;
};

static volatile sig_atomic_t got_stop, got_winch, got_tstp;

static void on_stop(int sig)
{
	(void)sig;
	got_stop = 1;
}

static void on_winch(int sig)
{
	(void)sig;
	got_winch = 1;
}

static void on_tstp(int sig)
{
	(void)sig;
	got_tstp = 1;
}

/* The terminal as top found it, and whether top changed it. */
struct term {
	bool live;      /* stdout is a terminal and screens are redrawn */
	bool have_tty;  /* stdin is a terminal in raw mode: keys are read */
	struct termios saved;
};

/* Raw keys (no echo, no line buffering; ^C still signals), alternate
 * screen, hidden cursor. */
static void term_enter(struct term *t)
{
	if (t->have_tty) {
		struct termios raw = t->saved;

		raw.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
		raw.c_cc[VMIN] = 1;
		raw.c_cc[VTIME] = 0;
		tcsetattr(STDIN_FILENO, TCSANOW, &raw);
	}
	if (t->live)
		fputs("\033[?1049h\033[?25l\033[H\033[2J", stdout);
	fflush(stdout);
}

static void term_leave(const struct term *t)
{
	if (t->live)
		fputs("\033[?25h\033[?1049l", stdout);
	fflush(stdout);
	if (t->have_tty)
		tcsetattr(STDIN_FILENO, TCSANOW, &t->saved);
}

/* ^Z: give the terminal back, stop, and take it again on fg. */
static void suspend(struct term *t)
{
	term_leave(t);
	signal(SIGTSTP, SIG_DFL);
	raise(SIGTSTP);
	signal(SIGTSTP, on_tstp);
	got_tstp = 0;
	term_enter(t);
}

static void add(struct screen *s, enum style st, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void add(struct screen *s, enum style st, const char *fmt, ...)
{
	va_list ap;

	if (s->n >= MAX_LINES)
		return;
	va_start(ap, fmt);
	vsnprintf(s->line[s->n], LINE_MAX_W, fmt, ap);
	va_end(ap);
	if (s->w < LINE_MAX_W)
		s->line[s->n][s->w] = 0;
	s->style[s->n++] = st;
}

static uint64_t moved(const struct vkv_stats_segment *x)
{
	uint64_t b = 0;

	for (int t = VKV_TIER_DRAM; t < VKV_TIER_COUNT; t++)
		b += x->tiers[t].bytes_in + x->tiers[t].bytes_out;
	return b;
}

static uint64_t sum_ev(const struct vkv_stats_segment *x, bool restores)
{
	uint64_t n = 0;

	for (int t = VKV_TIER_DRAM; t < VKV_TIER_COUNT; t++)
		n += restores ? x->tiers[t].restores : x->tiers[t].evictions;
	return n;
}

static const char *sort_key;
static bool sort_rev;

static int cmp_u64(uint64_t a, uint64_t b)
{
	return (a < b) - (a > b); /* larger first */
}

static int cmp_row(const void *pa, const void *pb)
{
	const struct vkv_stats_segment *a = &((const struct row *)pa)->p->seg;
	const struct vkv_stats_segment *b = &((const struct row *)pb)->p->seg;
	int c;

	if (!strcmp(sort_key, "inuse"))
		c = cmp_u64(a->in_use_bytes, b->in_use_bytes);
	else if (!strcmp(sort_key, "reserved"))
		c = cmp_u64(a->reserved_bytes, b->reserved_bytes);
	else if (!strcmp(sort_key, "peak"))
		c = cmp_u64(a->peak_committed, b->peak_committed);
	else if (!strcmp(sort_key, "frag"))
		c = cmp_u64((uint64_t)(vkvstat_fragmentation(a) * 1e6),
			    (uint64_t)(vkvstat_fragmentation(b) * 1e6));
	else if (!strcmp(sort_key, "evictions"))
		c = cmp_u64(sum_ev(a, false), sum_ev(b, false));
	else if (!strcmp(sort_key, "pid"))
		c = -cmp_u64((uint64_t)a->pid, (uint64_t)b->pid);
	else if (!strcmp(sort_key, "comm"))
		c = strcmp(a->comm, b->comm);
	else
		c = cmp_u64(a->committed_bytes, b->committed_bytes);
	if (!c)
		c = (a->pid > b->pid) - (a->pid < b->pid);
	return sort_rev ? -c : c;
}

/* [####++++....]: # in use, + committed but not in use, . headroom under
 * the budget (no budget: the bar is the committed memory). */
static void bar(char *out, const struct vkv_stats_segment *x)
{
	uint64_t full = x->budget ? x->budget : x->committed_bytes;
	unsigned used = 0, comm = 0;

	if (full) {
		double u = (double)x->in_use_bytes / (double)full;
		double c = (double)x->committed_bytes / (double)full;
		used = (unsigned)lround(fmin(u, 1.0) * BAR_W);
		comm = (unsigned)lround(fmin(c, 1.0) * BAR_W);
	}
	if (comm < used)
		comm = used;
	out[0] = '[';
	for (unsigned i = 0; i < BAR_W; i++)
		out[1 + i] = i < used ? '#' : i < comm ? '+' : '.';
	out[BAR_W + 1] = ']';
	out[BAR_W + 2] = 0;
}

/* A rate with `prec` decimals, "-" before there are two screens. */
static void rate(char *buf, size_t len, double v, int prec)
{
	if (v < 0)
		snprintf(buf, len, "-");
	else
		snprintf(buf, len, "%.*f", prec, v);
}

static void build(struct screen *sc, const struct vkvstat_snapshot *s,
		  struct row *rows, size_t nrows, const struct vkvstat_top_opts *o,
		  double interval)
{
	char a[16], b[16], c[16], d[16], e[16], f[16], g[16], br[BAR_W + 3];
	uint64_t committed = 0, reserved = 0, inuse = 0;
	time_t now = (time_t)(s->time_ns / 1000000000ull);
	unsigned room;
	struct tm tm;
	char when[16];

	localtime_r(&now, &tm);
	strftime(when, sizeof(when), "%H:%M:%S", &tm);
	for (size_t i = 0; i < nrows; i++) {
		committed += rows[i].p->seg.committed_bytes;
		reserved += rows[i].p->seg.reserved_bytes;
		inuse += rows[i].p->seg.in_use_bytes;
	}
	add(sc, ST_TITLE, "vkvstat top  %s  %zu process%s  every %.1fs  sort %s%s",
	    when, nrows, nrows == 1 ? "" : "es", interval, sort_key,
	    sort_rev ? " (rev)" : "");
	add(sc, ST_PLAIN, "device: %s committed, %s in use, %s reserved  dir %s",
	    vkvstat_size(a, sizeof(a), committed), vkvstat_size(b, sizeof(b), inuse),
	    vkvstat_size(c, sizeof(c), reserved), o->dir);
	if (s->scan.count[VKVSTAT_SEG_DENIED] + s->scan.count[VKVSTAT_SEG_BAD] +
	    s->scan.count[VKVSTAT_SEG_BUSY])
		add(sc, ST_WARN, "%zu denied, %zu bad, %zu busy segments (vkvstat "
			"without top says why)", s->scan.count[VKVSTAT_SEG_DENIED],
		    s->scan.count[VKVSTAT_SEG_BAD], s->scan.count[VKVSTAT_SEG_BUSY]);
	add(sc, ST_PLAIN, "%s", "");
	add(sc, ST_HEAD, "    PID COMM       COMMIT IN USE   PEAK FRAG SLOTS "
		"EV/s RS/s  GB/s OCCUPANCY");
	/* rows left: keep the tier and key lines on screen */
	room = sc->h > sc->n + 6 + s->gpus.n ? sc->h - sc->n - 6 - s->gpus.n : 1;
	for (size_t i = 0; i < nrows && i < room; i++) {
		const struct vkv_stats_segment *x = &rows[i].p->seg;

		bar(br, x);
		snprintf(g, sizeof(g), "%" PRIu64 "/%" PRIu64, x->slots_active % 1000,
			 x->slots_cached % 1000);
		rate(d, sizeof(d), rows[i].ev_s, 0);
		rate(e, sizeof(e), rows[i].rs_s, 0);
		rate(f, sizeof(f), rows[i].gbs, 2);
		add(sc, ST_PLAIN, "%7d %-10.10s %6s %6s %6s %3.0f%% %5s %4s %4s %5s %s",
		    rows[i].p->pid, x->comm,
		    vkvstat_size(a, sizeof(a), x->committed_bytes),
		    vkvstat_size(b, sizeof(b), x->in_use_bytes),
		    vkvstat_size(c, sizeof(c), x->peak_committed),
		    vkvstat_fragmentation(x) * 100.0, g, d, e, f, br);
	}
	if (nrows > room)
		add(sc, ST_PLAIN, "    ... %zu more", nrows - room);
	if (!nrows)
		add(sc, ST_PLAIN, "    (no process publishes vkv stats in %s)", o->dir);
	add(sc, ST_PLAIN, "%s", "");
	for (int t = VKV_TIER_DRAM; t < VKV_TIER_COUNT; t++) {
		uint64_t used = 0, ev = 0, rs = 0;

		for (size_t i = 0; i < nrows; i++) {
			used += rows[i].p->seg.tiers[t].bytes_used;
			ev += rows[i].p->seg.tiers[t].evictions;
			rs += rows[i].p->seg.tiers[t].restores;
		}
		add(sc, ST_PLAIN, "%-6s used %7s  evictions %8" PRIu64 "  restores %8" PRIu64,
		    vkvstat_tier_names[t], vkvstat_size(a, sizeof(a), used), ev, rs);
	}
	for (unsigned i = 0; i < s->gpus.n; i++)
		add(sc, ST_PLAIN, "gpu%-2u %-24.24s used %7s of %7s", s->gpus.g[i].index,
		    s->gpus.g[i].name, vkvstat_size(a, sizeof(a), s->gpus.g[i].used),
		    vkvstat_size(b, sizeof(b), s->gpus.g[i].total));
	add(sc, ST_HEAD, "q quit  s sort  r reverse  + slower  - faster  "
		"[# in use + committed . free]");
}

static void draw(FILE *f, const struct screen *sc, bool live, bool color)
{
	static const char *const codes[] = { "", VKVSTAT_BOLD, "\033[7m",
					     VKVSTAT_YELLOW };

	if (live)
		fputs("\033[H", f);
	for (unsigned i = 0; i < sc->n && (!live || i < sc->h); i++) {
		bool styled = color && sc->style[i] != ST_PLAIN;

		fprintf(f, "%s%s%s", styled ? codes[sc->style[i]] : "", sc->line[i],
			styled ? VKVSTAT_RESET : "");
		if (live)
			fputs("\033[K", f);
		if (!live || i + 1 < sc->n)
			fputc('\n', f);
	}
	if (live)
		fputs("\033[J", f);
	else
		fputc('\n', f);
	fflush(f);
}

/* Rates against the previous screen; then remember this one. */
static size_t rows_of(const struct vkvstat_snapshot *s, struct row *rows,
		      struct prev **prev, size_t *nprev, double dt)
{
	size_t n = 0;
	struct prev *np = calloc(s->nlive ? s->nlive : 1, sizeof(*np));

	for (size_t i = 0; i < s->scan.nprocs; i++) {
		const struct vkvstat_proc *p = &s->scan.procs[i];
		const struct vkv_stats_segment *x = &p->seg;

		if (p->state != VKVSTAT_SEG_LIVE)
			continue;
		rows[n] = (struct row){ p, -1, -1, -1 };
		for (size_t j = 0; j < *nprev && dt > 0; j++) {
			const struct prev *q = &(*prev)[j];

			if (q->pid != p->pid || sum_ev(x, false) < q->ev ||
			    sum_ev(x, true) < q->rs || moved(x) < q->bytes)
				continue;
			rows[n].ev_s = (double)(sum_ev(x, false) - q->ev) / dt;
			rows[n].rs_s = (double)(sum_ev(x, true) - q->rs) / dt;
			rows[n].gbs = (double)(moved(x) - q->bytes) / dt / 1e9;
		}
		if (np)
			np[n] = (struct prev){ p->pid, sum_ev(x, false),
					       sum_ev(x, true), moved(x) };
		n++;
	}
	free(*prev);
	*prev = np;
	*nprev = np ? n : 0;
	return n;
}

static void term_size(struct screen *sc, bool live)
{
	struct winsize ws;

	sc->w = 80;
	sc->h = 24;
	if (live && ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col &&
	    ws.ws_row) {
		sc->w = ws.ws_col < LINE_MAX_W - 1 ? ws.ws_col : LINE_MAX_W - 1;
		sc->h = ws.ws_row;
	} else if (!live) {
		sc->w = LINE_MAX_W - 1;
		sc->h = MAX_LINES;
	}
}

/* Wait up to `secs` for a key; returns it, 0 on timeout or signal. */
static int wait_key(double secs, bool have_tty)
{
	struct pollfd pfd = { STDIN_FILENO, POLLIN, 0 };
	char ch;

	if (!have_tty) {
		struct timespec ts = { (time_t)secs,
				       (long)((secs - floor(secs)) * 1e9) };
		nanosleep(&ts, NULL);
		return 0;
	}
	if (poll(&pfd, 1, (int)(secs * 1000)) <= 0)
		return 0;
	if (read(STDIN_FILENO, &ch, 1) != 1)
		return 0;
	return (unsigned char)ch;
}

static unsigned sort_index(const char *k)
{
	unsigned i;

	for (i = 0; vkvstat_top_sort_keys[i]; i++)
		if (!strcmp(vkvstat_top_sort_keys[i], k))
			return i;
	return 0;
}

static void handle_key(int key, double *interval, bool *quit)
{
	switch (key) {
	case 'q': case 'Q': case 3: /* ^C in raw mode */
		*quit = true;
		break;
	case 's': {
		unsigned i = sort_index(sort_key) + 1;
		sort_key = vkvstat_top_sort_keys[i] ? vkvstat_top_sort_keys[i]
						    : vkvstat_top_sort_keys[0];
		break;
	}
	case 'r':
		sort_rev = !sort_rev;
		break;
	case '+':
		*interval = fmin(*interval * 2, 3600);
		break;
	case '-':
		*interval = fmax(*interval / 2, 0.05);
		break;
	default:
		break;
	}
}

static double mono_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int vkvstat_top(const struct vkvstat_top_opts *o)
{
	struct term t = { .live = isatty(STDOUT_FILENO) && o->frames == 0 };
	bool color = vkvstat_use_color(stdout, o->color);
	struct screen *sc = calloc(1, sizeof(*sc));
	struct vkvstat_snapshot failed = { 0 };
	struct prev *prev = NULL;
	size_t nprev = 0;
	double interval = o->interval, last = 0;
	unsigned frame = 0;
	bool quit = false;
	int rc = VKVSTAT_EXIT_OK;

	if (!sc)
		return VKVSTAT_EXIT_ERROR;
	sort_key = o->sort;
	signal(SIGINT, on_stop);
	signal(SIGTERM, on_stop);
	signal(SIGHUP, on_stop);
	signal(SIGWINCH, on_winch);
	t.have_tty = t.live && isatty(STDIN_FILENO) &&
		     tcgetattr(STDIN_FILENO, &t.saved) == 0;
	if (t.have_tty)
		signal(SIGTSTP, on_tstp);
	term_enter(&t);
	while (!quit && !got_stop) {
		struct vkvstat_snapshot s;
		struct row *rows;
		size_t n;
		double now = mono_s();

		if (vkvstat_snapshot_take(&s, o->dir, o->scan_flags, true)) {
			failed = s;
			rc = VKVSTAT_EXIT_ERROR;
			break;
		}
		rows = calloc(s.nlive ? s.nlive : 1, sizeof(*rows));
		if (!rows) {
			vkvstat_snapshot_free(&s);
			rc = VKVSTAT_EXIT_ERROR;
			break;
		}
		n = rows_of(&s, rows, &prev, &nprev, last ? now - last : 0);
		last = now;
		qsort(rows, n, sizeof(*rows), cmp_row);
		term_size(sc, t.live);
		sc->n = 0;
		build(sc, &s, rows, n, o, interval);
		draw(stdout, sc, t.live, color);
		free(rows);
		vkvstat_snapshot_free(&s);
		if (o->frames && ++frame >= o->frames)
			break;
		/* keys within the interval act at once, then the screen redraws */
		for (double end = mono_s() + interval; !quit && !got_stop;) {
			double left = end - mono_s();
			int key;

			if (left <= 0 || got_winch || got_tstp)
				break;
			key = wait_key(left, t.have_tty);
			if (key) {
				handle_key(key, &interval, &quit);
				break;
			}
		}
		if (got_tstp)
			suspend(&t);
		got_winch = 0;
	}
	term_leave(&t);
	if (failed.err) { /* said only now: the alternate screen is gone */
		vkvstat_snapshot_error(&failed);
		vkvstat_snapshot_free(&failed);
	}
	free(prev);
	free(sc);
	return rc;
}
