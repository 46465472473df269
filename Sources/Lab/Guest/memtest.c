/*
 * miglab-memtest: the guest memory workload behind miglab's memory-integrity oracle.
 *
 * It runs inside the guest, so it is a small static C program with no runtime dependencies.
 *
 *   miglab-memtest [MiB] [status-file] [frames-file]
 *
 * Like QEMU's migration test, it increments a counter in every 4 KiB page of a buffer, page
 * after page, forever. At any instant, pages [0,k) hold N+1 and pages [k,n) hold N. Every page
 * also carries a header so that the host can find the page in a raw dump of guest RAM and
 * detect a page delivered to the wrong place:
 *
 *   off  0  u32 counter
 *   off  4  u32 zero
 *   off  8  u64 magic      0x475042414c47494d ("MIGLABPG"), built at run time so that the
 *                          literal never sits in guest memory as a false hit
 *   off 16  u64 index      page index in the buffer
 *   off 24  u64 pfn        guest page frame number of this page (from /proc/self/pagemap),
 *                          or MIGLAB_PFN_UNKNOWN where pagemap does not give it
 *   off 32  u64 npages     pages in the buffer
 *   off 40  u64 check      miglab_check_word(index, pfn, npages)
 *   off 48  u64 body[506]  body_word(index, i): fixed contents, so that damage anywhere in
 *                          the page (a flipped byte in the migration stream) is caught
 *
 * The host-side checker (Sources/Runner/MemoryOracle.swift) mirrors this layout.
 *
 * Before incrementing a page the workload checks that it holds the value of the current pass,
 * so a page lost by a migration is also reported from inside the guest:
 *   "MIGLAB-MEMTEST ERROR page=.. got=.. expect=.."   (first 20 on the console)
 * The status file (tmpfs, MAP_SHARED, rewritten in place) lets the host see that the guest
 * runs, through the guest agent:
 *   "MIGLAB-MEMTEST pass=P page=I touched=T errors=E npages=N\n"
 *
 * The frames file tells the host where the buffer lies in guest physical memory, so that it
 * reads only those frames, not all of guest RAM (the cost of a check then follows the
 * workload's size, not the guest's). It is written before the status file exists:
 *   "MIGLAB-MEMTEST-FRAMES npages=N runs=R\n" then R lines "FIRST_PFN COUNT\n" (decimal),
 *   runs of consecutive frames in ascending order, COUNT summing to N.
 * The host trusts it for nothing but where to look: every page found is still checked against
 * its own header, and a page not found where the file says is missing.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PAGE 4096u
#define MIGLAB_PFN_UNKNOWN UINT64_MAX
#define STATUS_LEN 128

static uint64_t magic_value(void) {
    volatile uint64_t masked = 0x1d0a181b161d1317ull;  /* MIGLAB_MEMTEST_MAGIC ^ 0x5a.. */
    return masked ^ 0x5a5a5a5a5a5a5a5aull;             /* = 0x475042414c47494d, "MIGLABPG" */
}

static uint64_t check_word(uint64_t magic, uint64_t index, uint64_t pfn, uint64_t npages) {
    uint64_t x = ~magic ^ index;
    x = (x << 13 | x >> 51) ^ pfn;
    x = (x << 29 | x >> 35) ^ npages;
    return x;
}

static uint64_t body_word(uint64_t index, uint64_t word) {
    uint64_t x = index * 0x9E3779B97F4A7C15ull ^ (word + 1) * 0xC2B2AE3D27D4EB4Full;
    return x ^ (x >> 29);
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The frame of every page, read from pagemap in large blocks: one pread per page costs a
 * system call each, and under TCG 16384 of them take a noticeable part of a second. */
static void read_frames(const unsigned char *buf, size_t npages, uint64_t *pfn) {
    for (size_t i = 0; i < npages; i++) pfn[i] = MIGLAB_PFN_UNKNOWN;
    int pagemap = open("/proc/self/pagemap", O_RDONLY);
    if (pagemap < 0) return;
    const size_t block = 8192;
    uint64_t entries[8192];
    for (size_t i = 0; i < npages; i += block) {
        size_t n = npages - i < block ? npages - i : block;
        off_t off = (off_t)((uintptr_t)(buf + i * PAGE) / PAGE) * 8;
        if (pread(pagemap, entries, n * 8, off) != (ssize_t)(n * 8)) break;
        for (size_t k = 0; k < n; k++) {
            uint64_t e = entries[k];
            uint64_t f = e & ((1ull << 55) - 1);
            /* not present, or 0 = hidden (no CAP_SYS_ADMIN) */
            if ((e & (1ull << 63)) && f) pfn[i + k] = f;
        }
    }
    close(pagemap);
}

/* Writes the frames file (see the top of this file); nothing when a frame is unknown. */
static void write_frames(const char *path, const uint64_t *pfn, size_t npages) {
    uint64_t *sorted = malloc(npages * sizeof *sorted);
    if (!sorted) return;
    memcpy(sorted, pfn, npages * sizeof *sorted);
    qsort(sorted, npages, sizeof *sorted, cmp_u64);
    if (sorted[npages - 1] == MIGLAB_PFN_UNKNOWN) { free(sorted); return; }
    size_t runs = 1;
    for (size_t i = 1; i < npages; i++) runs += sorted[i] != sorted[i - 1] + 1;
    char tmp[256];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) { free(sorted); return; }
    fprintf(f, "MIGLAB-MEMTEST-FRAMES npages=%zu runs=%zu\n", npages, runs);
    size_t start = 0;
    for (size_t i = 1; i <= npages; i++) {
        if (i == npages || sorted[i] != sorted[i - 1] + 1) {
            fprintf(f, "%llu %zu\n", (unsigned long long)sorted[start], i - start);
            start = i;
        }
    }
    free(sorted);
    if (fclose(f) == 0) rename(tmp, path);
}

static void write_sysctl(const char *path, const char *value) {
    int fd = open(path, O_WRONLY);
    if (fd < 0) return;
    if (write(fd, value, strlen(value)) < 0) { /* best effort */ }
    close(fd);
}

int main(int argc, char **argv) {
    size_t mib = argc > 1 ? strtoul(argv[1], 0, 0) : 64;
    const char *status_path = argc > 2 ? argv[2] : "/run/miglab-memtest.status";
    const char *frames_path = argc > 3 ? argv[3] : "/run/miglab-memtest.frames";
    if (mib == 0) { fprintf(stderr, "miglab-memtest: buffer size must be > 0 MiB\n"); return 2; }
    size_t npages = mib * 1024 * 1024 / PAGE;
    uint64_t magic = magic_value();

    /* The header records each page's frame number, so the pages must stay where they are:
     * no transparent huge pages (khugepaged would move them), no compaction of locked pages. */
    write_sysctl("/proc/sys/vm/compact_unevictable_allowed", "0");
    unsigned char *buf = mmap(0, npages * PAGE, PROT_READ | PROT_WRITE,
                              MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buf == MAP_FAILED) { perror("miglab-memtest: mmap"); return 1; }
    madvise(buf, npages * PAGE, MADV_NOHUGEPAGE);
    /* mlock faults every page in. */
    if (mlock(buf, npages * PAGE)) {
        perror("miglab-memtest: mlock (continuing)");
        for (size_t i = 0; i < npages; i++) buf[i * PAGE] = 0; /* fault every page in */
    }

    uint64_t *frames = malloc(npages * sizeof *frames);
    if (!frames) { perror("miglab-memtest: malloc"); return 1; }
    read_frames(buf, npages, frames);
    for (size_t i = 0; i < npages; i++) {
        unsigned char *p = buf + i * PAGE;
        uint64_t pfn = frames[i];
        *(uint32_t *)p = 0;
        *(uint32_t *)(p + 4) = 0;
        *(uint64_t *)(p + 8) = magic;
        *(uint64_t *)(p + 16) = i;
        *(uint64_t *)(p + 24) = pfn;
        *(uint64_t *)(p + 32) = npages;
        *(uint64_t *)(p + 40) = check_word(magic, i, pfn, npages);
        for (uint64_t w = 6; w < PAGE / 8; w++) ((uint64_t *)p)[w] = body_word(i, w);
    }
    write_frames(frames_path, frames, npages);
    free(frames);

    char *status = 0;
    int sfd = open(status_path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (sfd >= 0 && ftruncate(sfd, STATUS_LEN) == 0)
        status = mmap(0, STATUS_LEN, PROT_READ | PROT_WRITE, MAP_SHARED, sfd, 0);
    if (status == MAP_FAILED) status = 0;

    setvbuf(stdout, 0, _IOLBF, 0);
    printf("MIGLAB-MEMTEST START mib=%zu pages=%zu\n", mib, npages);

    uint32_t pass = 0;
    uint64_t errs = 0, touched = 0;
    for (;;) {
        for (size_t i = 0; i < npages; i++) {
            uint32_t *c = (uint32_t *)(buf + i * PAGE);
            if (*c != pass) {
                if (errs < 20)
                    printf("MIGLAB-MEMTEST ERROR page=%zu got=%u expect=%u\n", i, *c, pass);
                errs++;
            }
            *c = pass + 1;
            touched++;
            if (status && (touched & 4095) == 0)
                snprintf(status, STATUS_LEN, "MIGLAB-MEMTEST pass=%u page=%zu touched=%llu errors=%llu npages=%zu\n",
                         pass, i, (unsigned long long)touched, (unsigned long long)errs, npages);
        }
        pass++;
    }
}
