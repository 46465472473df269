#ifndef MIGLAB_CVFIO_H
#define MIGLAB_CVFIO_H
/*
 * The VFIO uAPI for Swift: the kernel's own header, plus what Debian 12's linux-libc-dev 6.1
 * lacks (PRE_COPY, MIG_DATA_SIZE, the iommufd device cdev), each behind #ifndef with the values of
 * the upstream header so a newer linux-libc-dev silently takes over.
 *
 * Swift's importer drops function-like macros (_IO and friends), so every ioctl request number is
 * re-exported as a typed constant, still computed by the C preprocessor from the kernel macros.
 */
#include <linux/vfio.h>
#include <linux/types.h>
#include <stddef.h>
#include <stdint.h>

/* ---- Added to include/uapi/linux/vfio.h in Linux 6.2 ("vfio: Extend the device migration
 * protocol with PRE_COPY"). The mig_state values are enum constants upstream; the PRE_COPY
 * migration flag appeared in the same commit, so it is the witness. */
#ifndef VFIO_MIGRATION_PRE_COPY
#define VFIO_MIGRATION_PRE_COPY (1 << 2)
#define VFIO_DEVICE_STATE_PRE_COPY 6
#define VFIO_DEVICE_STATE_PRE_COPY_P2P 7
#endif

#ifndef VFIO_MIG_GET_PRECOPY_INFO
struct vfio_precopy_info {
    __u32 argsz;
    __u32 flags;
    __aligned_u64 initial_bytes;
    __aligned_u64 dirty_bytes;
};
#define VFIO_MIG_GET_PRECOPY_INFO _IO(VFIO_TYPE, VFIO_BASE + 21)
#endif

#ifndef VFIO_DEVICE_FEATURE_MIG_DATA_SIZE
struct vfio_device_feature_mig_data_size {
    __aligned_u64 stop_copy_length;
};
#define VFIO_DEVICE_FEATURE_MIG_DATA_SIZE 9
#endif

/* ---- The device cdev (/dev/vfio/devices/vfioN) bound to iommufd: Linux 6.6. */
#ifndef VFIO_DEVICE_BIND_IOMMUFD
struct vfio_device_bind_iommufd {
    __u32 argsz;
    __u32 flags;
    __s32 iommufd;
    __u32 out_devid;
};
#define VFIO_DEVICE_BIND_IOMMUFD _IO(VFIO_TYPE, VFIO_BASE + 18)
#endif

#ifndef VFIO_DEVICE_ATTACH_IOMMUFD_PT
struct vfio_device_attach_iommufd_pt {
    __u32 argsz;
    __u32 flags;
    __u32 pt_id;
};
#define VFIO_DEVICE_ATTACH_IOMMUFD_PT _IO(VFIO_TYPE, VFIO_BASE + 19)
#endif

/* From include/uapi/linux/iommufd.h (not shipped by linux-libc-dev 6.1 at all). */
#ifndef IOMMU_IOAS_ALLOC
#define IOMMUFD_TYPE (';')
#define IOMMUFD_CMD_IOAS_ALLOC 0x81
struct iommu_ioas_alloc {
    __u32 size;
    __u32 flags;
    __u32 out_ioas_id;
};
#define IOMMU_IOAS_ALLOC _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_ALLOC)
#endif

/* ---- Typed constants Swift can see. */
static const uint32_t CVFIO_DEVICE_STATE_ERROR = VFIO_DEVICE_STATE_ERROR;
static const uint32_t CVFIO_DEVICE_STATE_STOP = VFIO_DEVICE_STATE_STOP;
static const uint32_t CVFIO_DEVICE_STATE_RUNNING = VFIO_DEVICE_STATE_RUNNING;
static const uint32_t CVFIO_DEVICE_STATE_STOP_COPY = VFIO_DEVICE_STATE_STOP_COPY;
static const uint32_t CVFIO_DEVICE_STATE_RESUMING = VFIO_DEVICE_STATE_RESUMING;
static const uint32_t CVFIO_DEVICE_STATE_RUNNING_P2P = VFIO_DEVICE_STATE_RUNNING_P2P;
static const uint32_t CVFIO_DEVICE_STATE_PRE_COPY = VFIO_DEVICE_STATE_PRE_COPY;
static const uint32_t CVFIO_DEVICE_STATE_PRE_COPY_P2P = VFIO_DEVICE_STATE_PRE_COPY_P2P;

static const uint64_t CVFIO_MIGRATION_STOP_COPY = VFIO_MIGRATION_STOP_COPY;
static const uint64_t CVFIO_MIGRATION_P2P = VFIO_MIGRATION_P2P;
static const uint64_t CVFIO_MIGRATION_PRE_COPY = VFIO_MIGRATION_PRE_COPY;

static const uint32_t CVFIO_DEVICE_FEATURE_MASK = VFIO_DEVICE_FEATURE_MASK;
static const uint32_t CVFIO_DEVICE_FEATURE_GET = VFIO_DEVICE_FEATURE_GET;
static const uint32_t CVFIO_DEVICE_FEATURE_SET = VFIO_DEVICE_FEATURE_SET;
static const uint32_t CVFIO_DEVICE_FEATURE_PROBE = VFIO_DEVICE_FEATURE_PROBE;
static const uint32_t CVFIO_DEVICE_FEATURE_MIGRATION = VFIO_DEVICE_FEATURE_MIGRATION;
static const uint32_t CVFIO_DEVICE_FEATURE_MIG_DEVICE_STATE = VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE;
static const uint32_t CVFIO_DEVICE_FEATURE_DMA_LOGGING_START = VFIO_DEVICE_FEATURE_DMA_LOGGING_START;
static const uint32_t CVFIO_DEVICE_FEATURE_DMA_LOGGING_STOP = VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP;
static const uint32_t CVFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT = VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT;
static const uint32_t CVFIO_DEVICE_FEATURE_MIG_DATA_SIZE = VFIO_DEVICE_FEATURE_MIG_DATA_SIZE;

static const int32_t CVFIO_API_VERSION = VFIO_API_VERSION;
static const unsigned long CVFIO_TYPE1v2_IOMMU = VFIO_TYPE1v2_IOMMU;
static const uint32_t CVFIO_GROUP_FLAGS_VIABLE = VFIO_GROUP_FLAGS_VIABLE;

/* ioctl request numbers (all _IO: VFIO encodes neither direction nor size). */
static const unsigned long CVFIO_IOCTL_GET_API_VERSION = VFIO_GET_API_VERSION;
static const unsigned long CVFIO_IOCTL_CHECK_EXTENSION = VFIO_CHECK_EXTENSION;
static const unsigned long CVFIO_IOCTL_SET_IOMMU = VFIO_SET_IOMMU;
static const unsigned long CVFIO_IOCTL_GROUP_GET_STATUS = VFIO_GROUP_GET_STATUS;
static const unsigned long CVFIO_IOCTL_GROUP_SET_CONTAINER = VFIO_GROUP_SET_CONTAINER;
static const unsigned long CVFIO_IOCTL_GROUP_GET_DEVICE_FD = VFIO_GROUP_GET_DEVICE_FD;
static const unsigned long CVFIO_IOCTL_DEVICE_RESET = VFIO_DEVICE_RESET;
static const unsigned long CVFIO_IOCTL_DEVICE_FEATURE = VFIO_DEVICE_FEATURE;
static const unsigned long CVFIO_IOCTL_DEVICE_BIND_IOMMUFD = VFIO_DEVICE_BIND_IOMMUFD;
static const unsigned long CVFIO_IOCTL_DEVICE_ATTACH_IOMMUFD_PT = VFIO_DEVICE_ATTACH_IOMMUFD_PT;
static const unsigned long CVFIO_IOCTL_MIG_GET_PRECOPY_INFO = VFIO_MIG_GET_PRECOPY_INFO;
static const unsigned long CVFIO_IOCTL_IOMMU_IOAS_ALLOC = IOMMU_IOAS_ALLOC;

/* Layout facts Swift cannot take from the imported structs: the header ends in a flexible array
 * member, and offsetof() of the pointer-carrying fields is what the request encoder patches. */
static inline size_t cvfio_sizeof_device_feature(void) { return sizeof(struct vfio_device_feature); }
static inline size_t cvfio_offsetof_dma_logging_control_ranges(void) {
    return offsetof(struct vfio_device_feature_dma_logging_control, ranges);
}
static inline size_t cvfio_offsetof_dma_logging_report_bitmap(void) {
    return offsetof(struct vfio_device_feature_dma_logging_report, bitmap);
}

/*
 * System calls with an errno-free result: >= 0 on success, -errno on failure. Reading errno from
 * Swift after a call is fragile (anything in between may clobber it); these return it instead.
 */
int cvfio_ioctl(int fd, unsigned long request, void *argument);
int cvfio_ioctl_value(int fd, unsigned long request, unsigned long value);
int cvfio_open(const char *path);
int cvfio_close(int fd);
long cvfio_read(int fd, void *buffer, size_t count);
long cvfio_write(int fd, const void *buffer, size_t count);

#endif
