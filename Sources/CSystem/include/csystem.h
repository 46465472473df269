#ifndef MIGLAB_CSYSTEM_H
#define MIGLAB_CSYSTEM_H
/* Linux calls Swift cannot reach directly: prctl() is variadic, and glibc only defines
 * POSIX_SPAWN_SETSID under _GNU_SOURCE. */
int miglab_set_child_subreaper(void);
short miglab_posix_spawn_setsid_flag(void);
#endif
