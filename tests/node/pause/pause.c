/*
 * kvinject's pod sandbox ("pause") process for the node tests: no image can be pulled here, so
 * this is built with `gcc -static` by tests/node/build.sh and packed into an image by
 * tests/node/images.sh.
 *
 * It sleeps until SIGTERM or SIGINT (then exits 0) and reaps every child that is reparented to
 * it (it is PID 1 of the pod's PID namespace when the pod shares one). `pause -v` prints the
 * version.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define PAUSE_VERSION "kvinject-pause 1"

static void on_stop(int signo) {
    (void)signo;
    _exit(0);
}

static void on_child(int signo) {
    int saved = errno;
    (void)signo;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
    errno = saved;
}

static int handle(int signo, void (*fn)(int), int flags) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = fn;
    sa.sa_flags = flags;
    sigemptyset(&sa.sa_mask);
    return sigaction(signo, &sa, NULL);
}

int main(int argc, char **argv) {
    if (argc > 1 && (strcmp(argv[1], "-v") == 0 || strcmp(argv[1], "--version") == 0)) {
        puts(PAUSE_VERSION);
        return 0;
    }
    if (argc > 1) {
        fprintf(stderr, "usage: %s [-v]\n", argv[0]);
        return 2;
    }
    if (getpid() != 1) {
        fprintf(stderr, "pause: warning: not PID 1, orphans are not reparented to me\n");
    }
    if (handle(SIGINT, on_stop, 0) < 0 || handle(SIGTERM, on_stop, 0) < 0 ||
        handle(SIGCHLD, on_child, SA_NOCLDSTOP | SA_RESTART) < 0) {
        perror("pause: sigaction");
        return 1;
    }
    for (;;) {
        pause();
    }
}
