/* linescan_fuzz.c: the report's compiled reader (src/socketsnoop/commands/report/linescan.c, included here) fed
 * mutated log lines, each in a buffer of its exact size, under AddressSanitizer and UBSan
 * (test_report_linescan.py builds and runs it): a read past a line, a leak of a batch or an export, an overflow
 * aborts the run. Also every export's offsets checked and released, as DuckDB releases them.
 *
 *     linescan_fuzz WORDS SEEDS ITERATIONS SEED
 */
#include "linescan.c"

#include <stdio.h>

#define CHECK(x)                                                                           \
    do {                                                                                   \
        if (!(x)) {                                                                        \
            fprintf(stderr, "linescan_fuzz: %s:%d: %s\n", __FILE__, __LINE__, #x);         \
            abort();                                                                       \
        }                                                                                  \
    } while (0)

static uint64_t state;
static uint64_t rnd(uint64_t n) {  /* xorshift64*, 0 <= r < n */
    state ^= state >> 12, state ^= state << 25, state ^= state >> 27;
    return n ? (state * 2685821657736338717ull) % n : 0;
}

static char *slurp(const char *path, long *len) {
    FILE *f = fopen(path, "rb");
    CHECK(f);
    CHECK(fseek(f, 0, SEEK_END) == 0);
    *len = ftell(f);
    rewind(f);
    char *data = malloc((size_t)*len + 1);
    CHECK(data && fread(data, 1, (size_t)*len, f) == (size_t)*len);
    fclose(f);
    data[*len] = 0;
    return data;
}

static const char *const TOKENS[] = {
    "\\x2d", "\\x", "\\x00", "\\x5c", "\\u00", "\\u007f", "\\u0000", "\\\\x8a", "\\\\", "...>", ">...>", "null",
    ",\"uid\":1", ",\"user\":\"u\"", ",\"cgroup\":\"/\"", " USER=a", " CONTAINER=0123456789ab", "4294967296",
    "18446744073709551616", "99999999999999999999", "Feb 29 2100", "2024-02-30T", "<134>", "Dec 11 21:05:58 h socket-snoop: ",
    "socket-snoop[1234567890]", "{\"timestamp\":\"", "\"family\":6", "::", "0x", "ffffffffffffffff0", "STATE_31", "ms",
    "\r", "\f", "\t", " ", "\"", "\\", "]", "[", "{", "}", ",", ":", "."};
static const char BYTES_[] = {0, (char)0xff, (char)0x80, '"', '\\', ' ', '\r', '\t', '\f', '>', ':', '.', ',', '-', '[',
                              ']', '{', '}', '=', 'x', 'u', '0', '9', 'a', 'f', 'A', '/', 0x7f, 0x1f};

/* line (n bytes of cap) mutated in place: its new length */
static int mutate(char *s, int n, int cap) {
    for (int times = 1 + (int)rnd(4); times; times--) {
        int i = (int)rnd((uint64_t)n + 1), k;
        const char *t;
        switch (rnd(6)) {
        case 0:  /* a byte changed */
            if (n) s[i % n] = rnd(2) ? BYTES_[rnd(sizeof BYTES_)] : (char)(s[i % n] ^ (1 << rnd(8)));
            break;
        case 1:  /* a byte inserted */
            if (n < cap) memmove(s + i + 1, s + i, (size_t)(n - i)), s[i] = BYTES_[rnd(sizeof BYTES_)], n++;
            break;
        case 2:  /* bytes left out */
            k = 1 + (int)rnd(rnd(2) ? 3 : 40);
            if (i + k > n) k = n - i;
            memmove(s + i, s + i + k, (size_t)(n - i - k)), n -= k;
            break;
        case 3:  /* cut */
            n = i;
            break;
        case 4:  /* a token inserted */
            t = TOKENS[rnd(sizeof TOKENS / sizeof *TOKENS)], k = (int)strlen(t);
            if (!rnd(8)) k = 1;  /* a NUL-led token: its first byte */
            if (n + k <= cap) memmove(s + i + k, s + i, (size_t)(n - i)), memcpy(s + i, t, (size_t)k), n += k;
            break;
        default:  /* a run doubled */
            k = (int)rnd((uint64_t)(n - i) + 1);
            if (n + k <= cap) memmove(s + i + k, s + i, (size_t)(n - i)), n += k;
            break;
        }
    }
    return n;
}

/* the batch exported, its columns checked as DuckDB reads them, released */
static void export_and_release(struct batch *b) {
    int64_t rows = ls_rows(b);
    struct ArrowArray a;
    CHECK(ls_export(b, &a) == 0);
    CHECK(a.length == rows && a.n_children == NCOLS && ls_rows(b) == 0);
    for (int c = 0; c < NCOLS; c++) {
        struct ArrowArray *k = a.children[c];
        CHECK(k->length == rows && k->null_count >= 0 && k->null_count <= rows);
        if (COL_TYPE[c] == UTF8) {
            const int32_t *off = k->buffers[1];
            CHECK(off[0] == 0);
            for (int64_t i = 0; i < rows; i++) CHECK(off[i + 1] >= off[i]);
            volatile char sum = 0;
            for (int32_t i = 0; i < off[rows]; i++) sum ^= ((const char *)k->buffers[2])[i];
        }
    }
    a.release(&a);
    CHECK(a.release == NULL);
    struct ArrowSchema s;
    CHECK(ls_schema(NULL, &s) == 0 && s.n_children == NCOLS);
    s.release(&s);
}

int main(int argc, char **argv) {
    CHECK(argc == 5);
    long words_len, seeds_len;
    char *words = slurp(argv[1], &words_len), *all = slurp(argv[2], &seeds_len);
    long iterations = atol(argv[3]);
    state = (uint64_t)atol(argv[4]) * 0x9E3779B97F4A7C15ull + 1;
    CHECK(ls_words(words) == 0);
    int count = 0, cap = 1024;
    char **lines = malloc(sizeof *lines * (size_t)cap);
    for (char *p = all, *nl; p < all + seeds_len; p = nl + 1) {
        nl = memchr(p, '\n', (size_t)(all + seeds_len - p));
        if (!nl) nl = all + seeds_len;
        *nl = 0;
        if (count == cap) lines = realloc(lines, sizeof *lines * (size_t)(cap *= 2));
        lines[count++] = p;
    }
    CHECK(count > 0);
    struct batch *b = ls_batch();
    char work[8192], joined[65536];
    int64_t taken = 0, handed = 0, line = 0, used_join = 0;
    for (long it = 0; it < iterations; it++) {
        const char *seed = lines[rnd((uint64_t)count)];
        int n = (int)strlen(seed);
        if (n > 4000) continue;
        memcpy(work, seed, (size_t)n);
        n = mutate(work, n, (int)sizeof work);
        char *exact = malloc((size_t)n + 1);  /* + 1: malloc(0) */
        memcpy(exact, work, (size_t)n);
        int64_t rows = ls_rows(b), others = ls_n_others(b);
        int64_t used = ls_parse(b, exact, n, 0, line, 1);
        CHECK(used == n);
        line = ls_line(b);
        taken += ls_rows(b) - rows;
        for (int64_t i = others; i < ls_n_others(b); i++) {  /* handed back: within the buffer, and added back */
            const int64_t *o = ls_others(b) + 3 * i;
            CHECK(0 <= o[1] && o[1] <= o[2] && o[2] <= n);
            CHECK(ls_add_other(b, o[0], exact + o[1], o[2] - o[1]) == 0);
            handed++;
        }
        free(exact);
        if (used_join + n + 1 <= (int64_t)sizeof joined) {  /* lines joined, parsed a block at a time below */
            memcpy(joined + used_join, work, (size_t)n), used_join += n;
            joined[used_join++] = '\n';
        }
        if (it % 64 == 63) {
            int64_t cut = (int64_t)rnd((uint64_t)used_join + 1);
            char *head = malloc((size_t)cut + 1), *tail;
            memcpy(head, joined, (size_t)cut);
            int64_t first = ls_parse(b, head, cut, 0, line, 0);  /* whole lines only */
            CHECK(first >= 0 && first <= cut && (first == 0 || head[first - 1] == '\n'));
            tail = malloc((size_t)(used_join - first) + 1);
            memcpy(tail, joined + first, (size_t)(used_join - first));
            CHECK(ls_parse(b, tail, used_join - first, 0, ls_line(b), 1) == used_join - first);
            free(head), free(tail);
            used_join = 0;
            ls_clear(b);
            export_and_release(b);
        }
    }
    export_and_release(b);
    ls_free(b);
    free(lines), free(all), free(words), free(words_store);
    printf("%ld iterations: %lld lines taken, %lld handed back\n", iterations, (long long)taken, (long long)handed);
    CHECK(taken > 0 && handed > 0);
    return 0;
}
