#ifndef MIGLAB_CVFIO_H
#define MIGLAB_CVFIO_H
#include <linux/vfio.h>
/* Placeholder: the VFIO uAPI shim (issue 5) lives here. */
#endif
