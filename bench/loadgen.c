/*
 * loadgen: loopback TCP churn for bench/churn.
 *
 *   loadgen PORT SECONDS CLIENTS [SERVERS] [ADDR]
 *
 * Listens on ADDR:PORT (default 127.0.0.1), runs SERVERS processes (default 2)
 * that accept() and close() each connection, and CLIENTS processes that
 * connect() and close() in a loop for SECONDS. Prints one line:
 *   connections=N errors=E seconds=S
 * (N = connects completed by all clients). Build: gcc -O2 -o loadgen loadgen.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct shared {
	volatile int stop;
	long conns[64];
	long errors[64];
};

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: %s PORT SECONDS CLIENTS [SERVERS] [ADDR]\n", argv[0]);
		return 2;
	}
	int port = atoi(argv[1]);
	double seconds = atof(argv[2]);
	int clients = atoi(argv[3]);
	int servers = argc > 4 ? atoi(argv[4]) : 2;
	const char *addr = argc > 5 ? argv[5] : "127.0.0.1";
	if (clients < 1 || clients > 64 || servers < 1 || servers > 64) {
		fprintf(stderr, "loadgen: 1..64 clients and servers\n");
		return 2;
	}
	struct shared *sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(port) };
	if (inet_pton(AF_INET, addr, &sin.sin_addr) != 1) {
		fprintf(stderr, "loadgen: bad address %s\n", addr);
		return 2;
	}
	int one = 1;
	int lfd = socket(AF_INET, SOCK_STREAM, 0);
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(lfd, (struct sockaddr *)&sin, sizeof(sin)) || listen(lfd, 4096)) {
		perror("loadgen: bind/listen");
		return 1;
	}
	pid_t spids[64], cpids[64];
	for (int i = 0; i < servers; i++) {
		spids[i] = fork();
		if (spids[i] == 0) {
			signal(SIGTERM, SIG_DFL);
			for (;;) {
				int fd = accept(lfd, NULL, NULL);
				if (fd >= 0)
					close(fd);
				else if (errno != EINTR && errno != ECONNABORTED)
					usleep(1000);
			}
		}
	}
	double start = now();
	for (int i = 0; i < clients; i++) {
		cpids[i] = fork();
		if (cpids[i] == 0) {
			close(lfd);
			long n = 0, err = 0;
			while (!sh->stop) {
				int fd = socket(AF_INET, SOCK_STREAM, 0);
				if (fd < 0) {
					err++;
					usleep(1000);
					continue;
				}
				if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0)
					n++;
				else {
					err++;
					if (errno == EADDRNOTAVAIL)
						usleep(1000);
				}
				close(fd);
			}
			sh->conns[i] = n;
			sh->errors[i] = err;
			_exit(0);
		}
	}
	struct timespec ts = { (time_t)seconds, (long)((seconds - (time_t)seconds) * 1e9) };
	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
	sh->stop = 1;
	for (int i = 0; i < clients; i++)
		waitpid(cpids[i], NULL, 0);
	double elapsed = now() - start;
	for (int i = 0; i < servers; i++) {
		kill(spids[i], SIGTERM);
		waitpid(spids[i], NULL, 0);
	}
	long total = 0, errors = 0;
	for (int i = 0; i < clients; i++) {
		total += sh->conns[i];
		errors += sh->errors[i];
	}
	printf("connections=%ld errors=%ld seconds=%.3f\n", total, errors, elapsed);
	return 0;
}
