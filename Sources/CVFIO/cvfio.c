#include "cvfio.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <unistd.h>

int cvfio_ioctl(int fd, unsigned long request, void *argument) {
    int rc = ioctl(fd, request, argument);
    return rc < 0 ? -errno : rc;
}

int cvfio_ioctl_value(int fd, unsigned long request, unsigned long value) {
    int rc = ioctl(fd, request, value);
    return rc < 0 ? -errno : rc;
}

int cvfio_open(const char *path) {
    /* O_CLOEXEC: a device fd must not leak into the QEMU or helper processes miglab spawns. */
    int fd = open(path, O_RDWR | O_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

int cvfio_close(int fd) {
    return close(fd) < 0 ? -errno : 0;
}

long cvfio_read(int fd, void *buffer, size_t count) {
    ssize_t n;
    do {
        n = read(fd, buffer, count);
    } while (n < 0 && errno == EINTR);
    return n < 0 ? -(long)errno : (long)n;
}

long cvfio_write(int fd, const void *buffer, size_t count) {
    ssize_t n;
    do {
        n = write(fd, buffer, count);
    } while (n < 0 && errno == EINTR);
    return n < 0 ? -(long)errno : (long)n;
}
