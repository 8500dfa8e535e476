/*
 * countload: load and attach count.bpf.o (bench/churn round D), print
 * "attached", wait for SIGINT/SIGTERM, then print "count=N" (the per-CPU
 * counter summed) and exit, which detaches it. Debian 12's bpftool (v7.1)
 * has no `prog loadall ... autoattach`, hence this loader.
 * Build: gcc -O2 -o countload countload.c -lbpf
 */
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s count.bpf.o\n", argv[0]);
		return 2;
	}
	struct bpf_object *obj = bpf_object__open_file(argv[1], NULL);
	if (!obj || libbpf_get_error(obj) || bpf_object__load(obj)) {
		fprintf(stderr, "countload: cannot load %s\n", argv[1]);
		return 1;
	}
	struct bpf_program *prog;
	bpf_object__for_each_program(prog, obj) {
		struct bpf_link *link = bpf_program__attach(prog);
		if (!link || libbpf_get_error(link)) {
			fprintf(stderr, "countload: cannot attach %s\n", bpf_program__name(prog));
			return 1;
		}
	}
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	printf("attached\n");
	fflush(stdout);
	while (!stop)
		pause();
	int fd = bpf_object__find_map_fd_by_name(obj, "counts");
	int ncpu = libbpf_num_possible_cpus();
	unsigned long long *vals = calloc(ncpu, sizeof(*vals)), total = 0;
	unsigned int key = 0;
	if (fd < 0 || !vals || bpf_map_lookup_elem(fd, &key, vals)) {
		fprintf(stderr, "countload: cannot read the counter\n");
		return 1;
	}
	for (int i = 0; i < ncpu; i++)
		total += vals[i];
	printf("count=%llu\n", total);
	bpf_object__close(obj);
	return 0;
}
