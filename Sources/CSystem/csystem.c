#define _GNU_SOURCE
#include <spawn.h>
#include <sys/prctl.h>
#include "csystem.h"

int miglab_set_child_subreaper(void) { return prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); }
short miglab_posix_spawn_setsid_flag(void) { return POSIX_SPAWN_SETSID; }
