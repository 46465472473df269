#ifndef MIGLAB_CPCI_SHIM_H
#define MIGLAB_CPCI_SHIM_H
#include <pci/pci.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * libpci reports a fatal error through pci_access.error, which must not return: the default
 * handler prints the message and calls exit(), which would end miglab on a malformed sysfs
 * tree. Swift can neither define a variadic C callback nor unwind through C, so every libpci
 * call that can fail goes through a guarded wrapper below: the wrapper sets a jump point, the
 * handler records the message and longjmps back to it, and the wrapper returns failure. Only C
 * frames (libpci's and the wrapper's) are skipped. After such a failure the pci_access may hold
 * leaked memory or a half-built device list; the Swift side only cleans it up.
 *
 * Warnings (an unreadable config file, say) are collected in the diagnostics, not printed.
 */

typedef struct cpci_diagnostics {
    char error[512];
    /* Newline-separated; later warnings are dropped once it is full. */
    char warnings[2048];
} cpci_diagnostics;

struct cpci_guard_frame {
    jmp_buf jump;
    cpci_diagnostics *diagnostics;
    struct cpci_guard_frame *previous;
};

/* The innermost guarded call on this thread (libpci handles are used by one thread at a time).
 * A function-local static, because Swift emits the bodies of the header functions it calls but
 * not file-scope variables. Each Swift object file that calls into this header gets its own
 * copy of these functions and of this slot, so all calls must come from one Swift file
 * (Sources/PCI/LibPCI.swift): handlers installed by one copy only see frames set by the same copy. */
static inline struct cpci_guard_frame **cpci_current_frame_slot(void) {
    static _Thread_local struct cpci_guard_frame *frame;
    return &frame;
}
#define cpci_current_frame (*cpci_current_frame_slot())

__attribute__((noreturn, format(printf, 1, 2)))
static void cpci_on_error(char *message, ...) {
    struct cpci_guard_frame *frame = cpci_current_frame;
    va_list args;
    va_start(args, message);
    if (frame == NULL) {
        /* A libpci call outside a guard: a bug in miglab, not in the tree it reads. */
        vfprintf(stderr, message, args);
        va_end(args);
        fputs("\nmiglab: libpci error outside a guarded call\n", stderr);
        abort();
    }
    vsnprintf(frame->diagnostics->error, sizeof frame->diagnostics->error, message, args);
    va_end(args);
    longjmp(frame->jump, 1);
}

__attribute__((format(printf, 1, 2)))
static void cpci_on_warning(char *message, ...) {
    struct cpci_guard_frame *frame = cpci_current_frame;
    if (frame == NULL) return;
    char line[512];
    va_list args;
    va_start(args, message);
    vsnprintf(line, sizeof line, message, args);
    va_end(args);
    char *all = frame->diagnostics->warnings;
    size_t used = strlen(all), needed = strlen(line) + 1;
    if (used + needed < sizeof frame->diagnostics->warnings) {
        memcpy(all + used, line, needed - 1);
        all[used + needed - 1] = '\n';
        all[used + needed] = '\0';
    }
}

/* Opens and closes a guard inside one wrapper; `failure` is what the wrapper returns when
 * libpci reported an error. */
#define CPCI_GUARD_BEGIN(diag, failure)                                  \
    struct cpci_guard_frame cpci_frame_;                                 \
    cpci_frame_.diagnostics = (diag);                                    \
    cpci_frame_.previous = cpci_current_frame;                           \
    if (setjmp(cpci_frame_.jump) != 0) {                                 \
        cpci_current_frame = cpci_frame_.previous;                       \
        return (failure);                                                \
    }                                                                    \
    cpci_current_frame = &cpci_frame_;
#define CPCI_GUARD_END() cpci_current_frame = cpci_frame_.previous;

/* pci_alloc with miglab's error and warning handlers installed. */
static inline struct pci_access *cpci_alloc(void) {
    struct pci_access *access = pci_alloc();
    if (access != NULL) {
        access->error = cpci_on_error;
        access->warning = cpci_on_warning;
    }
    return access;
}

/* Selects the linux-sysfs method on `sysfs_path` (the directory holding devices/), then
 * pci_init. Returns 0, or -1 with diag->error set. */
static inline int cpci_init_sysfs(struct pci_access *access, const char *sysfs_path, cpci_diagnostics *diag) {
    CPCI_GUARD_BEGIN(diag, -1)
    access->method = PCI_ACCESS_SYS_BUS_PCI;
    if (pci_set_param(access, "sysfs.path", (char *)sysfs_path) != 0) {
        snprintf(diag->error, sizeof diag->error, "libpci has no sysfs.path parameter");
        CPCI_GUARD_END()
        return -1;
    }
    pci_init(access);
    CPCI_GUARD_END()
    return 0;
}

static inline int cpci_scan_bus(struct pci_access *access, cpci_diagnostics *diag) {
    CPCI_GUARD_BEGIN(diag, -1)
    pci_scan_bus(access);
    CPCI_GUARD_END()
    return 0;
}

/* pci_fill_info: the known fields, or -1. */
static inline int cpci_fill_info(struct pci_dev *dev, int flags, cpci_diagnostics *diag) {
    CPCI_GUARD_BEGIN(diag, -1)
    int known = pci_fill_info(dev, flags);
    CPCI_GUARD_END()
    return known;
}

/* pci_read_block: 1 read, 0 not readable (short config space, permissions), -1 error. */
static inline int cpci_read_config(struct pci_dev *dev, int offset, u8 *buffer, int length, cpci_diagnostics *diag) {
    CPCI_GUARD_BEGIN(diag, -1)
    int ok = pci_read_block(dev, offset, buffer, length);
    CPCI_GUARD_END()
    return ok ? 1 : 0;
}

/* pci_lookup_name is variadic: one wrapper per shape miglab uses. Each returns NULL when the
 * ID is not in the database (PCI_LOOKUP_NO_NUMBERS) or on error. */
static inline const char *cpci_lookup(struct pci_access *access, char *buffer, int size, int flags,
                                      int a, int b, int c, int d, cpci_diagnostics *diag) {
    CPCI_GUARD_BEGIN(diag, NULL)
    const char *name = pci_lookup_name(access, buffer, size, flags | PCI_LOOKUP_NO_NUMBERS, a, b, c, d);
    CPCI_GUARD_END()
    return name;
}

static inline const char *cpci_vendor_name(struct pci_access *access, char *buffer, int size,
                                           unsigned vendor, cpci_diagnostics *diag) {
    return cpci_lookup(access, buffer, size, PCI_LOOKUP_VENDOR, (int)vendor, 0, 0, 0, diag);
}

static inline const char *cpci_device_name(struct pci_access *access, char *buffer, int size,
                                           unsigned vendor, unsigned device, cpci_diagnostics *diag) {
    return cpci_lookup(access, buffer, size, PCI_LOOKUP_DEVICE, (int)vendor, (int)device, 0, 0, diag);
}

static inline const char *cpci_subsystem_vendor_name(struct pci_access *access, char *buffer, int size,
                                                     unsigned subsystem_vendor, cpci_diagnostics *diag) {
    return cpci_lookup(access, buffer, size, PCI_LOOKUP_SUBSYSTEM | PCI_LOOKUP_VENDOR,
                       (int)subsystem_vendor, 0, 0, 0, diag);
}

static inline const char *cpci_subsystem_device_name(struct pci_access *access, char *buffer, int size,
                                                     unsigned vendor, unsigned device,
                                                     unsigned subsystem_vendor, unsigned subsystem_device,
                                                     cpci_diagnostics *diag) {
    return cpci_lookup(access, buffer, size, PCI_LOOKUP_SUBSYSTEM | PCI_LOOKUP_DEVICE,
                       (int)vendor, (int)device, (int)subsystem_vendor, (int)subsystem_device, diag);
}

/* `device_class` is base class and subclass (16 bits), as in struct pci_dev. */
static inline const char *cpci_class_name(struct pci_access *access, char *buffer, int size,
                                          unsigned device_class, cpci_diagnostics *diag) {
    return cpci_lookup(access, buffer, size, PCI_LOOKUP_CLASS, (int)device_class, 0, 0, 0, diag);
}

static inline const char *cpci_programming_interface_name(struct pci_access *access, char *buffer, int size,
                                                          unsigned device_class, unsigned prog_if,
                                                          cpci_diagnostics *diag) {
    return cpci_lookup(access, buffer, size, PCI_LOOKUP_PROGIF, (int)device_class, (int)prog_if, 0, 0, diag);
}

static inline const char *cpci_diagnostics_error(const cpci_diagnostics *diag) { return diag->error; }
static inline const char *cpci_diagnostics_warnings(const cpci_diagnostics *diag) { return diag->warnings; }
static inline void cpci_diagnostics_clear(cpci_diagnostics *diag) {
    diag->error[0] = '\0';
    diag->warnings[0] = '\0';
}

#endif
