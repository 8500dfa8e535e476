/* linescan.c: the report's compiled reader of the monitor's log lines (engine_scan.py loads it with ctypes).
 *
 * It takes the lines engine_sql.py's patterns take (TEXT_EVENT, TEXT_SUMMARY, JSON_EVENT, JSON_SUMMARY, behind a
 * syslog prefix or not), with the checks engine_cols.py's OK adds (the date exists, the numbers in range, at
 * most 400 bytes of states, names of at most 256 bytes), in the same exact forms, and cuts the same fields; it
 * may take fewer (a line with a carriage return, an odd STATES list, a JSON value not in printable ASCII),
 * never more: every other line that is not blank is handed back by its place in the buffer, for the Python
 * reader. The fields
 * go to DuckDB as an Arrow C stream (the Arrow C data interface: a struct array of int64, uint64 and utf8
 * columns), which DuckDB reads as a table without pyarrow. The words the grammar names (titles, descriptions,
 * results, states, JSON's event names) come from Python (ls_words): written once, in logformat/.
 *
 * Bounded: a line is looked at once, left to right, each test a fixed number of bytes or a bounded run; the
 * batch grows with the lines it is given (the caller gives a block at a time).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LINE 65536  /* files.py's MAX_LINE */

/* ---- the Arrow C data interface (https://arrow.apache.org/docs/format/CDataInterface.html) ---- */
struct ArrowSchema {
    const char *format, *name, *metadata;
    int64_t flags, n_children;
    struct ArrowSchema **children, *dictionary;
    void (*release)(struct ArrowSchema *);
    void *private_data;
};
struct ArrowArray {
    int64_t length, null_count, offset, n_buffers, n_children;
    const void **buffers;
    struct ArrowArray **children, *dictionary;
    void (*release)(struct ArrowArray *);
    void *private_data;
};
struct ArrowArrayStream {
    int (*get_schema)(struct ArrowArrayStream *, struct ArrowSchema *out);
    int (*get_next)(struct ArrowArrayStream *, struct ArrowArray *out);
    const char *(*get_last_error)(struct ArrowArrayStream *);
    void (*release)(struct ArrowArrayStream *);
    void *private_data;
};

/* ---- the columns, as `entries` names them ---- */
enum { I64, U64, UTF8 };
enum { C_N, C_HOST, C_SUMM, C_SEC, C_MS, C_LOC, C_KIND, C_FAM, C_SRC, C_SPORT, C_DST, C_DPORT, C_PID, C_COMM,
       C_NEWS, C_UID, C_USR, C_UNIT, C_CONTAINER, C_RESULT, C_DIR, C_DUR, C_HS, C_SENT, C_RECV, C_RETR, C_RTT,
       C_REST, C_WHAT, C_SOCK, C_CGROUP, NCOLS };
static const char *const COL_NAME[NCOLS] = {
    "n", "host", "summ", "sec", "ms", "loc", "kind", "fam", "src", "sport", "dst", "dport", "pid", "comm", "news",
    "uid", "usr", "unit", "container", "result", "dir", "dur", "hs", "sent", "recv", "retr", "rtt", "rest", "what",
    "sock", "cgroup"};
static const int COL_TYPE[NCOLS] = {
    I64, UTF8, I64, I64, I64, I64, I64, I64, UTF8, I64, UTF8, I64, I64, UTF8, I64,
    I64, UTF8, UTF8, UTF8, UTF8, UTF8, I64, I64, U64, U64, I64, I64, UTF8, I64, U64, UTF8};

struct column {
    uint8_t *valid;  /* a bit a row */
    void *values;    /* int64_t or uint64_t a row; utf8: int32_t offsets, one more than rows */
    char *data;      /* utf8 bytes */
    int64_t data_len, data_cap, nulls;
};

struct batch {
    int64_t rows, cap;
    struct column col[NCOLS];
    int failed;  /* out of memory: the batch is unusable */
    /* what else the lines held, for the caller */
    int64_t blank, too_long, first_long;  /* first_long: line number of the first line too long, 0 if none */
    int64_t *others;                      /* line number, start, end (offsets in the buffer) of each line handed back */
    int64_t line;                         /* the number of the last line looked at */
    int64_t n_others, others_cap;
};

/* ---- the words, from Python ---- */
#define MAX_WORDS 64
struct words { int n; const char *text[MAX_WORDS]; int len[MAX_WORDS]; int value[MAX_WORDS]; };
static struct words titles, descriptions, results, states, kinds;
static char *words_store;

/* "text\tvalue\n..." */
static int split_words(char **p, struct words *w) {
    w->n = 0;
    while (**p && **p != '\f') {
        char *tab = strchr(*p, '\t'), *nl = strchr(*p, '\n');
        if (!tab || !nl || tab > nl || w->n == MAX_WORDS) return -1;
        w->text[w->n] = *p;
        w->len[w->n] = (int)(tab - *p);
        w->value[w->n] = atoi(tab + 1);
        w->n++;
        *p = nl + 1;
    }
    if (**p == '\f') (*p)++;
    return 0;
}

/* the five tables, each "text\tvalue\n" lines, the tables parted by "\f": titles (kind), descriptions (state),
 * results, states (the STATES list's names), JSON's event names (kind); 0 if taken */
int ls_words(const char *all) {
    titles.n = descriptions.n = results.n = states.n = kinds.n = 0;  /* none until all are taken */
    free(words_store);
    words_store = strdup(all);
    if (!words_store) return -1;
    char *p = words_store;
    if (split_words(&p, &titles) || split_words(&p, &descriptions) || split_words(&p, &results) ||
        split_words(&p, &states) || split_words(&p, &kinds)) {
        titles.n = descriptions.n = results.n = states.n = kinds.n = 0;
        return -1;
    }
    return 0;
}

/* ---- the batch ---- */
struct batch *ls_batch(void) { return calloc(1, sizeof(struct batch)); }

static void free_columns(struct batch *b) {
    for (int c = 0; c < NCOLS; c++) {
        free(b->col[c].valid);
        free(b->col[c].values);
        free(b->col[c].data);
    }
    memset(b->col, 0, sizeof b->col);
    b->rows = b->cap = 0;
}

void ls_free(struct batch *b) {
    if (!b) return;
    free_columns(b);
    free(b->others);
    free(b);
}

/* the counts and the lines handed back cleared (the columns are moved out by ls_export) */
void ls_clear(struct batch *b) {
    b->blank = b->too_long = b->first_long = b->n_others = 0;
}

int64_t ls_rows(struct batch *b) { return b->failed ? -1 : b->rows; }
/* the bytes of text the batch holds (its lines for the Python reader can be long: engine_scan.py bounds it) */
int64_t ls_bytes(struct batch *b) {
    int64_t n = 0;
    for (int c = 0; c < NCOLS; c++) n += b->col[c].data_len;
    return n;
}
int64_t ls_blank(struct batch *b) { return b->blank; }
int64_t ls_too_long(struct batch *b) { return b->too_long; }
int64_t ls_first_long(struct batch *b) { return b->first_long; }
int64_t ls_n_others(struct batch *b) { return b->n_others; }
int64_t ls_line(struct batch *b) { return b->line; }
const int64_t *ls_others(struct batch *b) { return b->others; }

static int grow(struct batch *b) {
    int64_t cap = b->cap ? b->cap * 2 : 4096;
    for (int c = 0; c < NCOLS; c++) {
        struct column *k = &b->col[c];
        uint8_t *valid = realloc(k->valid, (size_t)(cap + 7) / 8);
        if (!valid) return -1;
        k->valid = valid;
        memset(valid + (b->cap + 7) / 8, 0, (size_t)((cap + 7) / 8 - (b->cap + 7) / 8));
        size_t size = COL_TYPE[c] == UTF8 ? sizeof(int32_t) * (size_t)(cap + 1) : sizeof(int64_t) * (size_t)cap;
        void *values = realloc(k->values, size);
        if (!values) return -1;
        k->values = values;
        if (COL_TYPE[c] == UTF8 && b->cap == 0) ((int32_t *)values)[0] = 0;
    }
    b->cap = cap;
    return 0;
}

_Static_assert(NCOLS <= 32, "struct row's set: a bit a column");

/* a row's values, set by the parse into a scratch row first: a line is written only once it is taken */
struct span { const char *p; int len; };
struct row {
    int64_t i[NCOLS];
    uint64_t u[NCOLS];
    struct span s[NCOLS];
    char comm[4 * 64];  /* a JSON COMM in the text line's form (\\u001b -> \\x1b, a space -> \\x20) */
    uint32_t set;  /* a bit a column: not NULL */
};

static void set_i(struct row *r, int c, int64_t v) { r->i[c] = v; r->set |= 1u << c; }
static void set_u(struct row *r, int c, uint64_t v) { r->u[c] = v; r->set |= 1u << c; }
static void set_s(struct row *r, int c, const char *p, int len) { r->s[c].p = p; r->s[c].len = len; r->set |= 1u << c; }

static int append(struct batch *b, const struct row *r) {
    if (b->rows == b->cap && grow(b)) return -1;
    int64_t i = b->rows;
    for (int c = 0; c < NCOLS; c++) {
        struct column *k = &b->col[c];
        int set = (r->set >> c) & 1;
        if (set) k->valid[i / 8] |= (uint8_t)(1u << (i % 8));
        else k->nulls++;
        if (COL_TYPE[c] == I64) ((int64_t *)k->values)[i] = set ? r->i[c] : 0;
        else if (COL_TYPE[c] == U64) ((uint64_t *)k->values)[i] = set ? r->u[c] : 0;
        else {
            int32_t *off = k->values;
            int len = set ? r->s[c].len : 0;
            if (k->data_len + len > INT32_MAX) return -1;
            if (k->data_len + len > k->data_cap) {
                int64_t cap = k->data_cap ? k->data_cap : 65536;
                while (cap < k->data_len + len) cap *= 2;
                char *data = realloc(k->data, (size_t)cap);
                if (!data) return -1;
                k->data = data;
                k->data_cap = cap;
            }
            if (len) memcpy(k->data + k->data_len, r->s[c].p, (size_t)len);
            k->data_len += len;
            off[i + 1] = (int32_t)k->data_len;
        }
    }
    b->rows++;
    return 0;
}

static int hand_back(struct batch *b, int64_t line, int64_t start, int64_t end) {
    if (b->n_others == b->others_cap) {
        int64_t cap = b->others_cap ? b->others_cap * 2 : 1024;
        int64_t *o = realloc(b->others, sizeof(int64_t) * 3 * (size_t)cap);
        if (!o) return -1;
        b->others = o;
        b->others_cap = cap;
    }
    int64_t *o = b->others + 3 * b->n_others++;
    o[0] = line, o[1] = start, o[2] = end;
    return 0;
}

/* ---- the grammar: each test moves *p past what it took, or returns 0 (and the line goes to Python) ---- */
typedef const char *cur;
#define DIGIT(c) ((c) >= '0' && (c) <= '9')

static int lit(cur *p, cur e, const char *s) {
    size_t n = strlen(s);
    if ((size_t)(e - *p) < n || memcmp(*p, s, n)) return 0;
    *p += n;
    return 1;
}

/* [0-9]{lo,hi} (leading zeros allowed), its value */
static int digits(cur *p, cur e, int lo, int hi, uint64_t *v) {
    cur q = *p;
    uint64_t x = 0;
    while (q < e && DIGIT(*q) && q - *p < hi) x = x * 10 + (uint64_t)(*q++ - '0');
    if (q - *p < lo || (q < e && DIGIT(*q))) return 0;
    *v = x;
    *p = q;
    return 1;
}

/* 0|[1-9][0-9]{0,most-1}, at most max */
static int number(cur *p, cur e, int most, unsigned __int128 max, uint64_t *v) {
    cur q = *p;
    if (q >= e || !DIGIT(*q)) return 0;
    if (*q == '0') {
        if (q + 1 < e && DIGIT(q[1])) return 0;
        *v = 0;
        *p = q + 1;
        return 1;
    }
    unsigned __int128 x = 0;
    while (q < e && DIGIT(*q) && q - *p < most) x = x * 10 + (unsigned)(*q++ - '0');
    if (q < e && DIGIT(*q)) return 0;
    if (x > max) return 0;  /* in the pattern's reach, out of the reader's range: the reader says */
    *v = (uint64_t)x;
    *p = q;
    return 1;
}

/* KEY then a number (0|[1-9][0-9]{0,most-1}, at most max) into column c (a line's text numbers both ways) */
static int field(cur *p, cur e, const char *key, int most, unsigned __int128 max, struct row *r, int c) {
    uint64_t v;
    if (!lit(p, e, key) || !number(p, e, most, max, &v)) return 0;
    if (COL_TYPE[c] == U64) set_u(r, c, v);
    else set_i(r, c, (int64_t)v);
    return 1;
}

/* one of the words w, whole: its index */
static int word_of(cur *p, cur e, const struct words *w, int *index) {
    int best = -1;
    for (int i = 0; i < w->n; i++)
        if (e - *p >= w->len[i] && !memcmp(*p, w->text[i], (size_t)w->len[i]) && (best < 0 || w->len[i] > w->len[best]))
            best = i;
    if (best < 0) return 0;
    *p += w->len[best];
    *index = best;
    return 1;
}

/* (?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d) x4 with dots */
static int ip4(cur *p, cur e) {
    cur q = *p;
    for (int i = 0; i < 4; i++) {
        if (i && (q >= e || *q++ != '.')) return 0;
        uint64_t v;
        if (!number(&q, e, 3, 255, &v)) return 0;
    }
    *p = q;
    return 1;
}

/* [0-9a-f:]{2,39} */
static int ip6(cur *p, cur e) {
    cur q = *p;
    while (q < e && (DIGIT(*q) || (*q >= 'a' && *q <= 'f') || *q == ':') && q - *p < 40) q++;
    if (q - *p < 2 || q - *p > 39) return 0;
    *p = q;
    return 1;
}

static int hex(char c) { return DIGIT(c) || (c >= 'a' && c <= 'f'); }

/* \x2d alone (a process named "-"), or TOKEN{1,64}: printable ASCII but '\', or \xNN of a byte escape_comm
 * escapes (not '-', which it escapes only as the whole name) */
static int comm(cur *p, cur e) {
    cur q = *p;
    int n = 0;
    if (e - q >= 4 && !memcmp(q, "\\x2d", 4) && (e - q == 4 || q[4] == ' ')) {
        *p = q + 4;
        return 1;
    }
    while (q < e && n < 65) {
        char c = *q;
        if (c == '\\') {
            if (e - q < 4 || q[1] != 'x' || !hex(q[2]) || !hex(q[3])) return 0;
            char a = q[2], z = q[3];
            int ok = (a == '0' && z != '0') || a == '1' || (a == '2' && z == '0') || (a == '5' && z == 'c') ||
                     (a == '7' && z == 'f') || (a >= '8' && a <= '9') || (a >= 'a' && a <= 'f');
            if (!ok) return 0;
            q += 4;
        } else if (c >= '!' && c <= '~') {
            q++;
        } else {
            break;
        }
        n++;
    }
    if (n < 1 || n > 64) return 0;
    *p = q;
    return 1;
}

/* [!-\[\]-~]{1,most}: printable ASCII but '\' (a --context name) */
static int name(cur *p, cur e, int most) {
    cur q = *p;
    while (q < e && *q >= '!' && *q <= '~' && *q != '\\' && q - *p <= most) q++;
    if (q == *p || q - *p > most) return 0;
    *p = q;
    return 1;
}

/* MONTH (0[1-9]|[12]\d|3[01]) ([12]\d{3}) ([01]\d|2[0-3]):([0-5]\d):([0-5]\d)\.(\d{3}) , the date as it exists */
static const char MONTHS[] = "JanFebMarAprMayJunJulAugSepOctNovDec";

static int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

/* two digits at q[i], as a number */
static int two(cur q, int i) { return (q[i] - '0') * 10 + (q[i + 1] - '0'); }

/* a time of day on a date that exists (years 1000-2999, as the patterns' [12]\d{3}), as seconds since the epoch in
 * C_SEC and its milliseconds in C_MS; 0 if there is no such time (the reader says: the line goes to it) */
static int set_time(struct row *r, int year, int month, int day, int hour, int minute, int second, int ms) {
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (year < 1000 || year > 2999 || month < 1 || month > 12 || day < 1 || hour > 23 || minute > 59 || second > 59)
        return 0;
    int leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    if (day > mdays[month - 1] + (month == 2 && leap)) return 0;
    set_i(r, C_SEC, days_from_civil(year, (unsigned)month, (unsigned)day) * 86400 + hour * 3600 + minute * 60 + second);
    set_i(r, C_MS, ms);
    return 1;
}

static int stamp(cur *p, cur e, struct row *r) {
    cur q = *p;
    if (e - q < 25 || q[3] != ' ' || q[6] != ' ' || q[11] != ' ' || q[14] != ':' || q[17] != ':' || q[20] != '.' ||
        q[24] != ' ')
        return 0;
    int month = -1;
    for (int i = 0; i < 12; i++)
        if (!memcmp(q, MONTHS + 3 * i, 3)) month = i + 1;
    if (month < 0) return 0;
    static const int at[] = {4, 5, 7, 8, 9, 10, 12, 13, 15, 16, 18, 19, 21, 22, 23};
    for (unsigned i = 0; i < sizeof at / sizeof *at; i++)
        if (!DIGIT(q[at[i]])) return 0;
    if (!set_time(r, two(q, 7) * 100 + two(q, 9), month, two(q, 4), two(q, 12), two(q, 15), two(q, 18),
                  (q[21] - '0') * 100 + two(q, 22)))
        return 0;
    *p = q + 25;
    return 1;
}

/* an optional RFC 3164 or RFC 3339 syslog prefix, as central rsyslog files have it: the host */
static int prefix(cur *p, cur e, struct row *r) {
    cur q = *p;
    if (q < e && *q == '<') {
        q++;
        cur d = q;
        while (q < e && DIGIT(*q) && q - d < 4) q++;
        if (q - d < 1 || q - d > 3 || q >= e || *q++ != '>') return 0;
    }
    if (e - q >= 15 && q[0] >= 'A' && q[0] <= 'Z' && q[1] >= 'a' && q[1] <= 'z' && q[2] >= 'a' && q[2] <= 'z' &&
        q[3] == ' ' && (q[4] == ' ' || DIGIT(q[4])) && DIGIT(q[5]) && q[6] == ' ' && DIGIT(q[7]) && DIGIT(q[8]) &&
        q[9] == ':' && DIGIT(q[10]) && DIGIT(q[11]) && q[12] == ':' && DIGIT(q[13]) && DIGIT(q[14])) {
        q += 15;
    } else {
        static const char shape[] = "dddd-dd-ddTdd:dd:dd";
        if (e - q < 19) return 0;
        for (int i = 0; i < 19; i++)
            if (shape[i] == 'd' ? !DIGIT(q[i]) : q[i] != shape[i]) return 0;
        q += 19;
        if (q < e && *q == '.') {
            cur d = ++q;
            while (q < e && DIGIT(*q) && q - d < 10) q++;
            if (q - d < 1 || q - d > 9) return 0;
        }
        if (q < e && *q == 'Z') q++;
        else if (e - q >= 6 && (*q == '+' || *q == '-') && DIGIT(q[1]) && DIGIT(q[2]) && q[3] == ':' && DIGIT(q[4]) &&
                 DIGIT(q[5])) q += 6;
        else return 0;
    }
    if (q >= e || *q++ != ' ') return 0;
    cur host = q;
    while (q < e && *q >= '!' && *q <= '~' && q - host <= 255) q++;
    if (q == host || q - host > 255) return 0;
    set_s(r, C_HOST, host, (int)(q - host));
    if (!lit(&q, e, " socket-snoop")) return 0;
    if (q < e && *q == '[') {
        cur d = ++q;
        while (q < e && DIGIT(*q) && q - d < 11) q++;
        if (q - d < 1 || q - d > 10 || q >= e || *q++ != ']') return 0;
    }
    if (q < e && *q == ':') q++;
    if (q >= e || *q++ != ' ') return 0;
    *p = q;
    return 1;
}

/* an IPv4 or IPv6 address (six) into column c */
static int address(cur *p, cur e, int six, struct row *r, int c) {
    cur a = *p;
    if (!(six ? ip6(p, e) : ip4(p, e))) return 0;
    set_s(r, c, a, (int)(*p - a));
    return 1;
}

/* what stands between the addresses, the ports and the PID: of a text line (IPv4, IPv6) and of a JSON line */
struct around { const char *sport, *dst, *dport, *pid; };
static const struct around TEXT_AROUND[2] = {{":", " DST=", ":", " PID="}, {"]:", " DST=[", "]:", " PID="}};
static const struct around JSON_AROUND = {"\",\"sport\":", ",\"dst\":\"", "\",\"dport\":", ",\"pid\":"};

/* the source's address and port, the destination's, the PID (after what says the family: six), in r; the PID */
static int addresses(cur *p, cur e, int six, const struct around *w, struct row *r, uint64_t *pid) {
    cur q = *p;
    uint64_t v;
    if (!address(&q, e, six, r, C_SRC) || !lit(&q, e, w->sport) || !number(&q, e, 5, 65535, &v)) return 0;
    set_i(r, C_SPORT, (int64_t)v);
    if (!lit(&q, e, w->dst) || !address(&q, e, six, r, C_DST) || !lit(&q, e, w->dport) || !number(&q, e, 5, 65535, &v))
        return 0;
    set_i(r, C_DPORT, (int64_t)v);
    set_i(r, C_FAM, six ? 6 : 4);
    if (!lit(&q, e, w->pid) || !number(&q, e, 10, 4294967295u, pid)) return 0;
    set_i(r, C_PID, (int64_t)*pid);
    *p = q;
    return 1;
}

/* SRC=(?:IP4:PORT DST=IP4|\[IP6\]:PORT DST=\[IP6\]):PORT PID=U32 COMM=(TOKEN{1,64}) */
static int endpoints(cur *p, cur e, struct row *r) {
    cur q = *p, a;
    uint64_t v;
    if (!lit(&q, e, "SRC=")) return 0;
    int six = lit(&q, e, "[");
    if (!addresses(&q, e, six, &TEXT_AROUND[six], r, &v) || !lit(&q, e, " COMM=")) return 0;
    a = q;
    if (!comm(&q, e)) return 0;
    if (q - a == 1 && *a == '-' && v > 0) set_s(r, C_COMM, "\\x00", 4);  /* no name, of a process: as the reader says */
    else set_s(r, C_COMM, a, (int)(q - a));
    *p = q;
    return 1;
}

/* (?: USER=(NAME))?(?: UNIT=(NAME))?(?: USER_UNIT=NAME)?(?: CONTAINER=([0-9a-f]{12}))?(?: POD=NAME)? */
static int context(cur *p, cur e, struct row *r) {
    cur q = *p, a;
    if (lit(&q, e, " USER=")) {
        a = q;
        if (!name(&q, e, 256)) return 0;
        if (!(q - a == 1 && *a == '-')) set_s(r, C_USR, a, (int)(q - a));
    }
    if (lit(&q, e, " UNIT=")) {
        a = q;
        if (!name(&q, e, 256)) return 0;
        if (!(q - a == 1 && *a == '-')) set_s(r, C_UNIT, a, (int)(q - a));
    }
    if (lit(&q, e, " USER_UNIT=") && !name(&q, e, 256)) return 0;
    if (lit(&q, e, " CONTAINER=")) {
        a = q;
        while (q < e && hex(*q) && q - a < 13) q++;
        if (q - a != 12) return 0;
        set_s(r, C_CONTAINER, a, 12);
    }
    if (lit(&q, e, " POD=") && !name(&q, e, 256)) return 0;
    *p = q;
    return 1;
}

/* -|(\d{1,14})\.(\d{3})ms: microseconds, or NULL */
static int millis(cur *p, cur e, struct row *r, int c) {
    cur q = *p;
    uint64_t whole, frac;
    if (q < e && *q == '-') {
        *p = q + 1;
        return 1;
    }
    if (!digits(&q, e, 1, 14, &whole) || !lit(&q, e, ".") || !digits(&q, e, 3, 3, &frac) || !lit(&q, e, "ms"))
        return 0;
    set_i(r, c, (int64_t)(whole * 1000 + frac));
    *p = q;
    return 1;
}

/* (?:\.\.\.>)?(?:STATE(?:>STATE)*(?:>\.\.\.>STATE)?)?, at most 400 bytes; narrower here: the "..." only where
 * the monitor writes it (first, or before the last state), each between states */
static int state_list(cur *p, cur e) {
    cur q = *p, start = q;
    int n = 0, gap = 0, index;
    if (lit(&q, e, "...>")) gap = 1;
    while (q < e && *q != ' ') {
        if (n && !lit(&q, e, ">")) return 0;
        if (n && e - q >= 4 && !memcmp(q, "...>", 4)) {
            if (gap == 2) return 0;
            q += 4;
            gap = 2;
        }
        if (!word_of(&q, e, &states, &index)) return 0;
        n++;
        if (gap == 2 && (q < e && *q == '>')) return 0;  /* ">...>" only before the last state */
    }
    if ((gap == 1 && n == 0) || q - start > 400) return 0;
    *p = q;
    return 1;
}

static int json_line(cur q, cur e, struct row *r);

/* one line (without its newline and its trailing blanks: ' ', '\t', '\f', '\v'): taken into r, or 0 */
static int text_line(cur q, cur e, struct row *r) {
    int index;
    if (!stamp(&q, e, r)) return 0;
    set_i(r, C_LOC, 1);
    if (lit(&q, e, "Connection Summary: ")) {
        set_i(r, C_SUMM, 1);
        if (!endpoints(&q, e, r) || !lit(&q, e, " RESULT=") || !word_of(&q, e, &results, &index)) return 0;
        set_s(r, C_RESULT, results.text[index], results.len[index]);
        if (!lit(&q, e, " DIR=")) return 0;
        if (lit(&q, e, "in")) set_s(r, C_DIR, "in", 2);
        else if (lit(&q, e, "out")) set_s(r, C_DIR, "out", 3);
        else if (!lit(&q, e, "-")) return 0;
        if (!lit(&q, e, " DURATION=") || !millis(&q, e, r, C_DUR) || !lit(&q, e, " HANDSHAKE=") ||
            !millis(&q, e, r, C_HS))
            return 0;
        if (!field(&q, e, " SENT=", 20, UINT64_MAX, r, C_SENT) ||
            !field(&q, e, " RECEIVED=", 20, UINT64_MAX, r, C_RECV) ||
            !field(&q, e, " RETRANSMITS=", 10, 4294967295u, r, C_RETR) || !lit(&q, e, " RTT=") ||
            !millis(&q, e, r, C_RTT) || !field(&q, e, " UID=", 10, 4294967295u, r, C_UID) ||
            !lit(&q, e, " STATES=") || !state_list(&q, e))
            return 0;
    } else {
        set_i(r, C_SUMM, 0);
        if (!word_of(&q, e, &titles, &index) || !lit(&q, e, ": ")) return 0;
        set_i(r, C_KIND, titles.value[index]);
        if (!endpoints(&q, e, r) || !lit(&q, e, " STATE=") || !word_of(&q, e, &descriptions, &index)) return 0;
        set_i(r, C_NEWS, descriptions.value[index]);
    }
    return context(&q, e, r) && q == e;
}

/* a text or a JSON line, behind a syslog prefix or not (e: its end, without its newline) */
static int entry_line(cur p, cur e, struct row *r) {
    cur q = p;
    /* a prefix unless the line starts with a JSON value or a text line's time (as engine_load.py's `pre`) */
    if (q < e && *q != '{' && (*q == '<' || !(e - q > 24 && q[11] == ' ' && q[14] == ':')) && !prefix(&q, e, r))
        return 0;
    cur t = e;
    if (q < e && *q == '{') {  /* JSON: blanks as JSON has them after its value (' ', '\t') */
        while (t > q && (t[-1] == ' ' || t[-1] == '\t')) t--;
        return json_line(q, t, r);
    }
    while (t > q && (t[-1] == ' ' || t[-1] == '\t' || t[-1] == '\f' || t[-1] == '\v')) t--;
    return text_line(q, t, r);
}

/* ---- JSON lines: engine_sql.py's JSON_EVENT and JSON_SUMMARY (the monitor's keys, in its order) ---- */

/* "..." of [!#-\[\]-~]{1,most} (a name of the owner's: no space, quote or backslash); its span */
static int json_name(cur *p, cur e, int slash, int most, cur *a, int *len) {
    cur q = *p;
    if (q >= e || *q++ != '"') return 0;
    *a = q;
    if (slash && (q >= e || *q++ != '/')) return 0;
    while (q < e && *q >= '!' && *q <= '~' && *q != '"' && *q != '\\') q++;
    *len = (int)(q - *a);
    if ((!slash && *len == 0) || *len > most || q >= e || *q++ != '"') return 0;
    *p = q;
    return 1;
}

/* "..." of at most `most` bytes of printable ASCII but '"' and '\' (a value the report does not read; narrower
 * than the pattern's, which takes any character but those and control ones) */
static int json_any(cur *p, cur e, int most) {
    cur q = *p, a;
    if (q >= e || *q++ != '"') return 0;
    for (a = q; q < e && *q >= ' ' && *q <= '~' && *q != '"' && *q != '\\' && q - a <= most; q++) {}
    if (q - a > most || q >= e || *q++ != '"') return 0;
    *p = q;
    return 1;
}

/* "COMM": at most 64 of: printable ASCII but '"' and '\' (a space as \x20), \u00NN of a control byte
 * (\xNN), \\xNN of a byte not UTF-8 (\xNN): the text line's form, as the report's tables keep names */
static int json_comm(cur *p, cur e, struct row *r, int64_t pid) {
    cur q = *p;
    char *out = r->comm;
    int n = 0;
    if (q >= e || *q++ != '"') return 0;
    while (q < e && *q != '"') {
        if (++n > 64) return 0;
        if (*q == '\\') {
            if (e - q >= 6 && q[1] == 'u' && q[2] == '0' && q[3] == '0' && hex(q[4]) && hex(q[5]) &&
                ((q[4] == '0' && q[5] != '0') || q[4] == '1' || (q[4] == '7' && q[5] == 'f'))) {
                memcpy(out, "\\x", 2), out[2] = q[4], out[3] = q[5];
                q += 6;
            } else if (e - q >= 5 && q[1] == '\\' && q[2] == 'x' && q[3] >= '8' && hex(q[3]) && hex(q[4])) {
                memcpy(out, "\\x", 2), out[2] = q[3], out[3] = q[4];
                q += 5;
            } else {
                return 0;
            }
            out += 4;
        } else if (*q == ' ') {
            memcpy(out, "\\x20", 4);
            out += 4;
            q++;
        } else if (*q > ' ' && *q <= '~') {
            *out++ = *q++;
        } else {
            return 0;
        }
    }
    if (q >= e) return 0;
    *p = q + 1;
    int len = (int)(out - r->comm);
    if (len == 0) set_s(r, C_COMM, pid > 0 ? "\\x00" : "-", pid > 0 ? 4 : 1);  /* no name, or no process */
    else if (len == 1 && r->comm[0] == '-') set_s(r, C_COMM, "\\x2d", 4);
    else set_s(r, C_COMM, r->comm, len);
    return 1;
}

/* ,"family":(4,"src":"IP4","sport":PORT,"dst":"IP4"|6,"src":"IP6","sport":PORT,"dst":"IP6"),"dport":PORT,
 * "pid":U32,"comm":"JSON_COMM" */
static int json_endpoints(cur *p, cur e, struct row *r) {
    cur q = *p;
    uint64_t v;
    int six;
    if (lit(&q, e, ",\"family\":4,\"src\":\"")) six = 0;
    else if (lit(&q, e, ",\"family\":6,\"src\":\"")) six = 1;
    else return 0;
    if (!addresses(&q, e, six, &JSON_AROUND, r, &v) || !lit(&q, e, ",\"comm\":") || !json_comm(&q, e, r, (int64_t)v))
        return 0;
    *p = q;
    return 1;
}

/* (,"user":"N")?(,"cgroup":"/N*")?(,"unit":"N")?(,"container":"[0-9a-f]{12,64}")?(,"pod":"A")?(,"exe":"A")?
 * (,"user_unit":"A")? ; a name of at most 256 bytes (longer: the Python reader cuts it) */
static int json_names(cur *p, cur e, struct row *r) {
    cur q = *p, a;
    int len;
    if (lit(&q, e, ",\"user\":")) {
        if (!json_name(&q, e, 0, 256, &a, &len)) return 0;
        if (len == 1 && *a == '-') set_s(r, C_USR, "\\x2d", 4);
        else set_s(r, C_USR, a, len);
    }
    if (lit(&q, e, ",\"cgroup\":")) {
        if (!json_name(&q, e, 1, 256, &a, &len)) return 0;
        set_s(r, C_CGROUP, a, len);
    }
    if (lit(&q, e, ",\"unit\":")) {
        if (!json_name(&q, e, 0, 256, &a, &len)) return 0;
        if (len == 1 && *a == '-') set_s(r, C_UNIT, "\\x2d", 4);
        else set_s(r, C_UNIT, a, len);
    }
    if (lit(&q, e, ",\"container\":\"")) {
        a = q;
        while (q < e && hex(*q) && q - a <= 64) q++;
        if (q - a < 12 || q - a > 64 || !lit(&q, e, "\"")) return 0;
        set_s(r, C_CONTAINER, a, 12);
    }
    if (lit(&q, e, ",\"pod\":") && !json_any(&q, e, MAX_LINE)) return 0;
    if (lit(&q, e, ",\"exe\":") && !json_any(&q, e, MAX_LINE)) return 0;
    if (lit(&q, e, ",\"user_unit\":") && !json_any(&q, e, MAX_LINE)) return 0;
    *p = q;
    return 1;
}

/* null|(0|[1-9]\d{0,8})\.(\d{3}) (a JSON number: no leading zero): microseconds, or NULL */
static int json_ms(cur *p, cur e, struct row *r, int c) {
    cur q = *p;
    uint64_t whole, frac;
    if (lit(&q, e, "null")) {
        *p = q;
        return 1;
    }
    if (!number(&q, e, 9, 999999999, &whole) || !lit(&q, e, ".") || !digits(&q, e, 3, 3, &frac)) return 0;
    set_i(r, c, (int64_t)(whole * 1000 + frac));
    *p = q;
    return 1;
}

/* "0x[0-9a-f]{1,16}": the socket's address (0: NULL, as the reader has it) */
static int json_sock(cur *p, cur e, struct row *r) {
    cur q = *p, a;
    uint64_t v = 0;
    if (!lit(&q, e, ",\"sock\":\"0x")) return 0;
    for (a = q; q < e && hex(*q) && q - a <= 16; q++) v = v * 16 + (uint64_t)(DIGIT(*q) ? *q - '0' : *q - 'a' + 10);
    if (q == a || q - a > 16 || !lit(&q, e, "\"")) return 0;
    if (v) set_u(r, C_SOCK, v);
    *p = q;
    return 1;
}

/* "[a-z]{1,16}" */
static int json_owner(cur *p, cur e) {
    cur q = *p, a;
    if (!lit(&q, e, ",\"owner\":\"")) return 0;
    for (a = q; q < e && *q >= 'a' && *q <= 'z' && q - a <= 16; q++) {}
    if (q == a || q - a > 16 || !lit(&q, e, "\"")) return 0;
    *p = q;
    return 1;
}

/* {"timestamp":"YYYY-MM-DDThh:mm:ss.mmmZ" ...} */
static int json_line(cur q, cur e, struct row *r) {
    uint64_t v;
    int index;
    static const char shape[] = "dddd-dd-ddTdd:dd:dd.dddZ\"";
    if (!lit(&q, e, "{\"timestamp\":\"") || e - q < 25) return 0;
    for (int i = 0; i < 25; i++)
        if (shape[i] == 'd' ? !DIGIT(q[i]) : q[i] != shape[i]) return 0;
    if (!set_time(r, two(q, 0) * 100 + two(q, 2), two(q, 5), two(q, 8), two(q, 11), two(q, 14), two(q, 17),
                  (q[20] - '0') * 100 + two(q, 21)))
        return 0;
    set_i(r, C_LOC, 0);
    q += 25;
    if (!lit(&q, e, ",\"event\":\"")) return 0;
    if (lit(&q, e, "connection\"")) {
        set_i(r, C_SUMM, 1);
        if (!json_endpoints(&q, e, r) || !json_owner(&q, e) || !lit(&q, e, ",\"direction\":")) return 0;
        if (lit(&q, e, "\"in\"")) set_s(r, C_DIR, "in", 2);
        else if (lit(&q, e, "\"out\"")) set_s(r, C_DIR, "out", 3);
        else if (!lit(&q, e, "null")) return 0;
        if (!lit(&q, e, ",\"result\":\"") || !word_of(&q, e, &results, &index) || !lit(&q, e, "\"")) return 0;
        set_s(r, C_RESULT, results.text[index], results.len[index]);
        if (!lit(&q, e, ",\"netns\":") || !number(&q, e, 20, UINT64_MAX, &v) || !json_sock(&q, e, r)) return 0;
        if (!field(&q, e, ",\"uid\":", 10, 4294967295u, r, C_UID) || !json_names(&q, e, r) ||
            !field(&q, e, ",\"bytes_sent\":", 20, UINT64_MAX, r, C_SENT) ||
            !field(&q, e, ",\"bytes_received\":", 20, UINT64_MAX, r, C_RECV) ||
            !field(&q, e, ",\"retransmits\":", 10, 4294967295u, r, C_RETR))
            return 0;
        if (!lit(&q, e, ",\"rtt_ms\":") || !json_ms(&q, e, r, C_RTT) || !lit(&q, e, ",\"handshake_ms\":") ||
            !json_ms(&q, e, r, C_HS) || !lit(&q, e, ",\"duration_ms\":") || !json_ms(&q, e, r, C_DUR) ||
            !lit(&q, e, ",\"states\":["))
            return 0;
        for (int n = 0; !lit(&q, e, "]"); n++) {
            if (n == 64 || (n && !lit(&q, e, ",")) || !lit(&q, e, "\"") || !word_of(&q, e, &states, &index) ||
                !lit(&q, e, "\""))
                return 0;
        }
        if (!lit(&q, e, ",\"states_truncated\":") || !(lit(&q, e, "true") || lit(&q, e, "false")) ||
            !lit(&q, e, ",\"complete\":") || !(lit(&q, e, "true") || lit(&q, e, "false")))
            return 0;
    } else {
        set_i(r, C_SUMM, 0);
        if (!word_of(&q, e, &kinds, &index) || !lit(&q, e, "\"")) return 0;
        set_i(r, C_KIND, kinds.value[index]);
        if (!json_endpoints(&q, e, r)) return 0;
        if (lit(&q, e, ",\"uid\":")) {
            if (!number(&q, e, 10, 4294967295u, &v)) return 0;
            set_i(r, C_UID, (int64_t)v);
        }
        if (!json_names(&q, e, r) || !json_owner(&q, e) || !lit(&q, e, ",\"old_state\":")) return 0;
        if (!lit(&q, e, "null")) {
            cur a;
            if (!lit(&q, e, "\"")) return 0;
            for (a = q; q < e && ((*q >= 'A' && *q <= 'Z') || DIGIT(*q) || *q == '_') && q - a <= 20; q++) {}
            if (q == a || q - a > 20 || !lit(&q, e, "\"")) return 0;
        }
        if (!lit(&q, e, ",\"new_state\":\"") || !word_of(&q, e, &states, &index) || !lit(&q, e, "\"")) return 0;
        set_i(r, C_NEWS, states.value[index]);
        if (!lit(&q, e, ",\"description\":") || !json_any(&q, e, 64)) return 0;
        if (!lit(&q, e, ",\"netns\":") || !number(&q, e, 20, UINT64_MAX, &v) || !json_sock(&q, e, r)) return 0;
    }
    return lit(&q, e, "}") && q == e;
}


static int blank(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v'; }


/* The whole lines of buf[0:len] (and the last one without a newline if final), numbered from line + 1: the
 * lines taken into the batch (n = base + 2 * line number), blank ones and ones over MAX_LINE bytes counted
 * (a blank one too: files.py, which reads blocks of a size it does not choose, counts a blank line too long
 * once it has held MAX_LINE bytes of it without its end, which a line that long at least nearly always is),
 * every other one handed back. The bytes used (up to the last newline, or all if final); -1 out of memory. */
int64_t ls_parse(struct batch *b, const char *buf, int64_t len, int64_t base, int64_t line, int final) {
    cur p = buf, end = buf + len;
    if (!titles.n || b->failed) return -1;
    while (p < end) {
        cur nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl) {
            if (!final) break;
            nl = end;
        }
        line++;
        cur e = nl, q = p;
        if (e - p > MAX_LINE) {  /* blank or not, as files.py counts a line it could not hold */
            if (!b->too_long++) b->first_long = line;
            p = nl < end ? nl + 1 : end;
            continue;
        }
        while (q < e && blank(*q)) q++;
        if (q == e) {
            b->blank++;
        } else {
            struct row r;
            r.set = 0;
            if (!memchr(p, '\r', (size_t)(e - p)) && entry_line(p, e, &r)) {
                set_i(&r, C_N, base + 2 * line);
                set_i(&r, C_WHAT, 1);
                if (r.i[C_FAM] == 6) set_s(&r, C_REST, p, (int)(e - p));  /* its addresses' form checked after */
                if (append(b, &r)) goto oom;
            } else if (hand_back(b, line, p - buf, e - buf)) {
                goto oom;
            }
        }
        p = nl < end ? nl + 1 : end;
    }
    b->line = line;
    return p - buf;
oom:
    b->failed = 1;
    return -1;
}

/* a line for the Python reader, as Python decoded it (n as ls_parse numbers lines; what 0, its text in rest) */
int ls_add_other(struct batch *b, int64_t n, const char *text, int64_t len) {
    struct row r;
    r.set = 0;
    if (b->failed || len > MAX_LINE * 4) return -1;
    set_i(&r, C_N, n);
    set_i(&r, C_WHAT, 0);
    set_s(&r, C_REST, text, (int)len);
    if (append(b, &r)) {
        b->failed = 1;
        return -1;
    }
    return 0;
}

/* ---- the export: the batch's columns moved into an Arrow struct array; the schema of the stream ---- */
/* each column owns its buffers (a consumer may move a child out and release the parent: the spec allows it) */
struct child {
    struct column col;
    const void *buffers[3];
};

struct exported {
    const void *top_buffers[1];
    struct ArrowArray children[NCOLS], *child_ptrs[NCOLS];
};

static void child_release(struct ArrowArray *a) {
    struct child *k = a->private_data;
    free(k->col.valid);
    free(k->col.values);
    free(k->col.data);
    free(k);
    a->release = NULL;
}

static void schema_child_release(struct ArrowSchema *s) { s->release = NULL; }

static void array_release(struct ArrowArray *a) {
    struct exported *x = a->private_data;
    for (int c = 0; c < NCOLS; c++)
        if (x->children[c].release) x->children[c].release(&x->children[c]);
    free(x);
    a->release = NULL;
}

static void schema_release(struct ArrowSchema *s) {
    free(s->private_data);
    free(s->children);
    s->release = NULL;
}

/* get_schema of the stream (engine_scan.py makes the stream: its get_next reads the file) */
int ls_schema(void *stream, struct ArrowSchema *out) {
    (void)stream;
    struct ArrowSchema *children = calloc(NCOLS, sizeof *children);
    struct ArrowSchema **ptrs = calloc(NCOLS, sizeof *ptrs);
    if (!children || !ptrs) {
        free(children);
        free(ptrs);
        return 12;  /* ENOMEM */
    }
    for (int c = 0; c < NCOLS; c++) {
        children[c] = (struct ArrowSchema){.format = COL_TYPE[c] == I64 ? "l" : COL_TYPE[c] == U64 ? "L" : "u",
                                           .name = COL_NAME[c], .flags = 2 /* nullable */,
                                           .release = schema_child_release};
        ptrs[c] = &children[c];
    }
    *out = (struct ArrowSchema){.format = "+s", .name = "", .n_children = NCOLS, .children = ptrs,
                                .release = schema_release, .private_data = children};
    return 0;
}

/* the stream's release and get_last_error (engine_scan.py's get_next is Python's; these two are C's, so that a
 * consumer that releases the stream late finds them whatever Python has freed) */
void ls_stream_release(struct ArrowArrayStream *s) { s->release = NULL; }
const char *ls_stream_error(struct ArrowArrayStream *s) {
    (void)s;
    return "socket-snoop report: the compiled reader failed (the error is raised again in Python)";
}

/* the batch's rows moved into out (the batch left empty); -1 out of memory */
int ls_export(struct batch *b, struct ArrowArray *out) {
    if (b->failed) return -1;
    struct exported *x = calloc(1, sizeof *x);
    struct child *kids[NCOLS] = {0};
    int ok = x && !(b->rows == 0 && grow(b));
    for (int c = 0; ok && c < NCOLS; c++) ok = (kids[c] = calloc(1, sizeof **kids)) != NULL;
    if (!ok) {
        for (int c = 0; c < NCOLS; c++) free(kids[c]);
        free(x);
        return -1;
    }
    int64_t rows = b->rows;
    for (int c = 0; c < NCOLS; c++) {
        struct child *k = kids[c];
        k->col = b->col[c];
        k->buffers[0] = k->col.nulls ? k->col.valid : NULL;  /* no bitmap: every value valid */
        k->buffers[1] = k->col.values;
        k->buffers[2] = k->col.data ? k->col.data : "";
        x->children[c] = (struct ArrowArray){.length = rows, .null_count = k->col.nulls,
                                             .n_buffers = COL_TYPE[c] == UTF8 ? 3 : 2, .buffers = k->buffers,
                                             .release = child_release, .private_data = k};
        x->child_ptrs[c] = &x->children[c];
    }
    memset(b->col, 0, sizeof b->col);
    b->rows = b->cap = 0;
    x->top_buffers[0] = NULL;
    *out = (struct ArrowArray){.length = rows, .n_buffers = 1, .n_children = NCOLS, .buffers = x->top_buffers,
                               .children = x->child_ptrs, .release = array_release, .private_data = x};
    return 0;
}
