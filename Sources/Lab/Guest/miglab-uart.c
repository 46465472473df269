/* miglab-uart: register-level checks of a PCI serial device's 16550 ports, from inside miglab's
 * guest (static, no libc beyond what -static brings; runs in any guest image).
 *
 *   miglab-uart BDF loop          each port: bytes written to THR come back in RBR (polled,
 *                                 interrupts off), one line per port, exit 8 when one fails
 *   miglab-uart BDF scr [V0 V1..] read (or write, one value per port) the scratch registers
 *
 * Why registers and not the tty layer: the kernel's mtty raises its receive interrupt only when
 * its FIFO reaches the trigger level exactly (it has no character-timeout interrupt), so through
 * the 8250 driver short writes may never be read back; polling tests the device itself. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>
#include <time.h>

enum { RBR = 0, THR = 0, IER = 1, FCR = 2, LCR = 3, MCR = 4, LSR = 5, SCR = 7 };
enum { LSR_DR = 0x01, LSR_THRE = 0x20, FCR_ENABLE = 0x01, FCR_CLEAR = 0x06 };

/* Port I/O through /dev/port: iopl(3) is refused or emulated differently across kernels, and
 * ioperm() covers only ports below 0x400, while PCI I/O BARs sit higher. */
static int devport = -1;
static unsigned char inb(unsigned long port) {
    unsigned char v = 0xff;
    if (pread(devport, &v, 1, (off_t)port) != 1) { perror("MIGLAB-UART read /dev/port"); exit(9); }
    return v;
}
static void outb(unsigned char v, unsigned long port) {
    if (pwrite(devport, &v, 1, (off_t)port) != 1) { perror("MIGLAB-UART write /dev/port"); exit(9); }
}

static int ports(const char *bdf, unsigned long base[], int max) {
    char path[256];
    snprintf(path, sizeof path, "/sys/bus/pci/devices/%s/resource", bdf);
    FILE *f = fopen(path, "r");
    if (!f) { printf("MIGLAB-UART error=no-device bdf=%s\n", bdf); exit(7); }
    unsigned long long start, end, flags;
    int n = 0;
    while (n < max && fscanf(f, "%llx %llx %llx", &start, &end, &flags) == 3) {
        /* IORESOURCE_IO: an I/O port BAR; a 16550 port is 8 registers. */
        if ((flags & 0x100) && start && end >= start + 7) base[n++] = (unsigned long)start;
    }
    fclose(f);
    return n;
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

/* Writes `len` bytes and reads them back, polling LSR; returns how many came back in order. */
static int loop(unsigned long b, const unsigned char *data, int len) {
    unsigned char ier = inb(b + IER), lcr = inb(b + LCR);
    outb(lcr & 0x7f, b + LCR);          /* DLAB off: THR/RBR, not the divisor */
    outb(0, b + IER);                   /* no interrupts: the driver must not take the bytes */
    outb(FCR_ENABLE | FCR_CLEAR, b + FCR);
    while (inb(b + LSR) & LSR_DR) (void)inb(b + RBR);
    int got = 0;
    for (int i = 0; i < len; i++) {
        double t0 = now();
        while (!(inb(b + LSR) & LSR_THRE) && now() - t0 < 1) ;
        outb(data[i], b + THR);
        t0 = now();
        while (!(inb(b + LSR) & LSR_DR) && now() - t0 < 2) ;
        if (!(inb(b + LSR) & LSR_DR)) break;
        if (inb(b + RBR) != data[i]) break;
        got++;
    }
    outb(ier, b + IER);
    outb(lcr, b + LCR);
    return got;
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: miglab-uart BDF loop|scr [VALUES...]\n"); return 1; }
    devport = open("/dev/port", O_RDWR);
    if (devport < 0) { perror("MIGLAB-UART open /dev/port"); return 9; }
    unsigned long base[8];
    int n = ports(argv[1], base, 8);
    if (n == 0) { printf("MIGLAB-UART error=no-io-ports bdf=%s\n", argv[1]); return 7; }
    if (!strcmp(argv[2], "loop")) {
        const unsigned char data[] = "MIGLAB-UART-loop-0123456789";
        int failed = 0;
        for (int p = 0; p < n; p++) {
            int got = loop(base[p], data, (int)sizeof data - 1);
            printf("MIGLAB-UART loop port=%d base=0x%lx sent=%d back=%d\n", p, base[p], (int)sizeof data - 1, got);
            if (got != (int)sizeof data - 1) failed++;
        }
        return failed ? 8 : 0;
    }
    if (!strcmp(argv[2], "scr")) {
        for (int p = 0; p < n; p++) {
            if (argc > 3 + p) outb((unsigned char)strtoul(argv[3 + p], NULL, 0), base[p] + SCR);
            printf("MIGLAB-UART scr port=%d base=0x%lx value=0x%02x\n", p, base[p], inb(base[p] + SCR));
        }
        return 0;
    }
    fprintf(stderr, "miglab-uart: unknown command %s\n", argv[2]);
    return 1;
}
