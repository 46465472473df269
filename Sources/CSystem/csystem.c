#define _GNU_SOURCE
#include <spawn.h>
#include <sys/prctl.h>
#include "csystem.h"

int miglab_set_child_subreaper(void) { return prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); }
short miglab_posix_spawn_setsid_flag(void) { return POSIX_SPAWN_SETSID; }

#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

int miglab_enter_network_namespace(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    int rc = setns(fd, CLONE_NEWNET);
    close(fd);
    return rc;
}

#include <string.h>

size_t miglab_find_all(const uint8_t *haystack, size_t length, const uint8_t *needle, size_t needle_length,
                       size_t *out, size_t max) {
    size_t n = 0, pos = 0;
    while (n < max && pos + needle_length <= length) {
        const uint8_t *hit = memmem(haystack + pos, length - pos, needle, needle_length);
        if (!hit) break;
        out[n++] = (size_t)(hit - haystack);
        pos = (size_t)(hit - haystack) + needle_length;
    }
    return n;
}
