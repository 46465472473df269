#ifndef MIGLAB_CSYSTEM_H
#define MIGLAB_CSYSTEM_H
/* Linux calls Swift cannot reach directly: prctl() is variadic, and glibc only defines
 * POSIX_SPAWN_SETSID under _GNU_SOURCE. */
int miglab_set_child_subreaper(void);
short miglab_posix_spawn_setsid_flag(void);
#endif
#ifndef MIGLAB_CSYSTEM_NETNS_H
#define MIGLAB_CSYSTEM_NETNS_H
/* Moves the calling thread into the network namespace at `path` (setns(CLONE_NEWNET)).
 * Returns 0, or -1 with errno set. Only this thread changes namespace. */
int miglab_enter_network_namespace(const char *path);
#endif
#ifndef MIGLAB_CSYSTEM_SCAN_H
#define MIGLAB_CSYSTEM_SCAN_H
#include <stddef.h>
#include <stdint.h>
/* Offsets of every occurrence of `needle` in `haystack` (glibc's memmem: the stream proxy
 * scans hundreds of MB per migration, faster than a Swift debug build can). Returns how many
 * were written to `out` (at most `max`). */
size_t miglab_find_all(const uint8_t *haystack, size_t length, const uint8_t *needle, size_t needle_length,
                       size_t *out, size_t max);
#endif
