/*
 * The first process of a Sandlot microVM: makes the sandbox's root filesystem
 * and hands PID 1 to the agent.
 *
 * The kernel runs it from the initramfs (sandlot/node/microvm/guest.py builds
 * it: this program, the kernel modules Debian builds as modules, the agent,
 * and per sandbox `/sandlot/vm.conf` and `/sandlot/run/config.json`). It
 *
 *   1. loads the modules listed in /modules.order (virtio, erofs, overlay...);
 *   2. mounts the image (a read-only erofs disk, serial "sandlot-image") and the
 *      sandbox's writable disk (ext4, serial "sandlot-disk"), and joins them
 *      with overlayfs at /newroot, as the host does for the other runtimes;
 *   3. mounts /proc, /sys, /dev, /dev/pts, /dev/shm, the cgroup2 hierarchy,
 *      the agent's directory at /.sandlot (read-only) and the volumes (virtiofs);
 *   4. makes the workload's cgroup (pids and memory limits), configures eth0
 *      (address, default route), lo and the host name;
 *   5. moves /newroot onto / and execs the agent, keeping one descriptor of
 *      the writable disk open (SANDLOT_VM_DISK_FD) so that the agent can
 *      freeze it for a consistent checkpoint.
 *
 * `sandlot.probe` on the kernel command line only prints PROBE_OK and powers
 * off: the node's check that this accelerator (KVM) runs a guest at all.
 * Any failure is printed to the console (the sandbox's runtime log) and ends
 * the VM, so the node reports it instead of waiting.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <net/route.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define PROBE_OK "SANDLOT-PROBE-OK"
#define AGENT "/.sandlot/sandlot-agent"
#define WORKLOAD_CGROUP "/sys/fs/cgroup/sandbox"
#define WORKLOAD_CGROUP_IN_NEWROOT "/newroot" WORKLOAD_CGROUP
/* Room in the workload's pids cgroup for the agent's threads while it forks there. */
#define AGENT_PIDS 16
/* The agent kills a hog at the limit; the kernel's OOM killer acts only this far above it. */
#define MEMORY_SLACK (64LL << 20)

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("sandlot-init: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
    sync();
    reboot(RB_AUTOBOOT); /* with -no-reboot, QEMU exits */
    _exit(1);
}

static void xmount(const char *src, const char *dst, const char *type, unsigned long flags, const char *data) {
    mkdir(dst, 0755);
    if (mount(src, dst, type, flags, data) != 0)
        die("mount %s (%s) on %s: %s", src, type, dst, strerror(errno));
}

static void mkdirs(const char *path, mode_t mode) {
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p == '/') {
            *p = 0;
            mkdir(buf, mode);
            *p = '/';
        }
    }
    mkdir(buf, mode);
}

static char cmdline[4096];

static void read_cmdline(void) {
    int fd = open("/proc/cmdline", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t n = read(fd, cmdline, sizeof cmdline - 1);
        cmdline[n > 0 ? n : 0] = 0;
        close(fd);
    }
    cmdline[strcspn(cmdline, "\n")] = 0;
}

/* "name.param=value" words of the command line, as "param=value ..." (what modprobe passes a module). */
static void module_params(const char *path, char *out, size_t n) {
    char name[128];
    const char *base = strrchr(path, '/');
    snprintf(name, sizeof name, "%s", base ? base + 1 : path);
    name[strcspn(name, ".")] = 0;
    for (char *p = name; *p; p++)
        if (*p == '-')
            *p = '_';
    size_t len = strlen(name), used = 0;
    out[0] = 0;
    char copy[sizeof cmdline];
    snprintf(copy, sizeof copy, "%s", cmdline);
    for (char *save = NULL, *w = strtok_r(copy, " ", &save); w; w = strtok_r(NULL, " ", &save)) {
        if (strncmp(w, name, len) == 0 && w[len] == '.' && used + strlen(w) + 2 < n)
            used += snprintf(out + used, n - used, "%s%s", used ? " " : "", w + len + 1);
    }
}

static void load_modules(void) {
    FILE *f = fopen("/modules.order", "r");
    if (!f)
        return; /* a kernel with everything built in */
    char line[512];
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        if (!line[0])
            continue;
        int fd = open(line, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            die("module %s: %s", line, strerror(errno));
        char params[2048];
        module_params(line, params, sizeof params);
        if (syscall(SYS_finit_module, fd, params, 0) != 0 && errno != EEXIST)
            die("loading module %s: %s", line, strerror(errno));
        close(fd);
    }
    fclose(f);
}

/* The first line of sysfs attribute <dir>/<entry>/<attr> into `out`; 0 if unreadable or empty. */
static int read_attr(const char *dir, const char *entry, const char *attr, char *out, size_t n) {
    char path[600];
    snprintf(path, sizeof path, "%s/%s/%s", dir, entry, attr);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t r = read(fd, out, n - 1);
    close(fd);
    out[r > 0 ? r : 0] = 0;
    out[strcspn(out, "\n")] = 0;
    return r > 0 && out[0];
}

/* The /dev/vdX whose virtio serial is `serial`, waiting for the disk to appear. */
static void find_disk(const char *serial, char *out, size_t n) {
    for (int tries = 0; tries < 1000; tries++) {
        DIR *d = opendir("/sys/block");
        struct dirent *e;
        while (d && (e = readdir(d))) {
            if (strncmp(e->d_name, "vd", 2) != 0)
                continue;
            char s[128];
            if (read_attr("/sys/block", e->d_name, "serial", s, sizeof s) && strcmp(s, serial) == 0) {
                snprintf(out, n, "/dev/%s", e->d_name);
                closedir(d);
                return;
            }
        }
        if (d)
            closedir(d);
        usleep(10000);
    }
    die("no disk with serial %s appeared", serial);
}

static int hexval(char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* vm.conf carries paths hex-encoded (any byte but NUL may be in a path). */
static void unhex(const char *in, char *out, size_t n) {
    size_t i = 0;
    for (; in[0] && in[1] && i + 1 < n; in += 2) {
        int hi = hexval(in[0]), lo = hexval(in[1]);
        if (hi < 0 || lo < 0)
            die("bad hex path in vm.conf");
        out[i++] = (char)(hi * 16 + lo);
    }
    out[i] = 0;
}

static void ifup(int sock, const char *name) {
    struct ifreq ifr = {0};
    snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name);
    if (ioctl(sock, SIOCGIFFLAGS, &ifr) != 0)
        die("interface %s: %s", name, strerror(errno));
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    if (ioctl(sock, SIOCSIFFLAGS, &ifr) != 0)
        die("bringing %s up: %s", name, strerror(errno));
}

static void set_addr(int sock, const char *name, unsigned long req, const char *addr) {
    struct ifreq ifr = {0};
    struct sockaddr_in *sin = (struct sockaddr_in *)&ifr.ifr_addr;
    snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name);
    sin->sin_family = AF_INET;
    if (inet_pton(AF_INET, addr, &sin->sin_addr) != 1)
        die("bad address %s", addr);
    if (ioctl(sock, req, &ifr) != 0)
        die("setting address %s on %s: %s", addr, name, strerror(errno));
}

/* eth0 gets `addr`/`prefix` and a default route via `gw`; lo comes up in any case. */
static void network(const char *addr, int prefix, const char *gw) {
    int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (sock < 0)
        die("socket: %s", strerror(errno));
    ifup(sock, "lo");
    if (addr) {
        char mask[INET_ADDRSTRLEN];
        struct in_addr m = {htonl(prefix ? 0xffffffffu << (32 - prefix) : 0)};
        inet_ntop(AF_INET, &m, mask, sizeof mask);
        set_addr(sock, "eth0", SIOCSIFADDR, addr);
        set_addr(sock, "eth0", SIOCSIFNETMASK, mask);
        ifup(sock, "eth0");
        struct rtentry rt = {0};
        struct sockaddr_in *dst = (struct sockaddr_in *)&rt.rt_dst, *via = (struct sockaddr_in *)&rt.rt_gateway,
                           *msk = (struct sockaddr_in *)&rt.rt_genmask;
        dst->sin_family = via->sin_family = msk->sin_family = AF_INET;
        if (inet_pton(AF_INET, gw, &via->sin_addr) != 1)
            die("bad gateway %s", gw);
        rt.rt_flags = RTF_UP | RTF_GATEWAY;
        rt.rt_dev = "eth0";
        if (ioctl(sock, SIOCADDRT, &rt) != 0)
            die("default route via %s: %s", gw, strerror(errno));
    }
    close(sock);
}

/* /dev/virtio-ports/<name> links, as udev would make them (the agent opens its port by name). */
static void port_links(const char *dev) {
    char dir[300];
    snprintf(dir, sizeof dir, "%s/virtio-ports", dev);
    mkdir(dir, 0755);
    DIR *d = opendir("/sys/class/virtio-ports");
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char name[256], link[600], target[300];
        if (!read_attr("/sys/class/virtio-ports", e->d_name, "name", name, sizeof name))
            continue;
        snprintf(link, sizeof link, "%s/%s", dir, name);
        snprintf(target, sizeof target, "../%s", e->d_name);
        symlink(target, link);
    }
    if (d)
        closedir(d);
}

static void write_file(const char *path, const char *value) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0 || write(fd, value, strlen(value)) < 0)
        die("writing %s to %s: %s", value, path, strerror(errno));
    close(fd);
}

/* The cgroup the agent starts the sandbox's processes in (SANDLOT_VM_CGROUP): the kernel holds
 * them to the pids limit (a fork bomb fizzles, as under crun) and, as a backstop behind the
 * agent's own watchdog, to the memory limit. The agent itself, PID 1, stays in the root. */
static void workload_cgroup(long long pids, long long memory) {
    char value[64];
    write_file("/newroot/sys/fs/cgroup/cgroup.subtree_control", "+pids +memory");
    mkdir(WORKLOAD_CGROUP_IN_NEWROOT, 0755);
    if (pids > 0) {
        snprintf(value, sizeof value, "%lld", pids + AGENT_PIDS);
        write_file(WORKLOAD_CGROUP_IN_NEWROOT "/pids.max", value);
    }
    if (memory > 0) {
        snprintf(value, sizeof value, "%lld", memory + MEMORY_SLACK);
        write_file(WORKLOAD_CGROUP_IN_NEWROOT "/memory.max", value);
    }
}

static void probe_if_asked(void) {
    read_cmdline();
    if (strstr(cmdline, "sandlot.probe")) {
        printf("%s\n", PROBE_OK);
        fflush(stdout);
        reboot(RB_AUTOBOOT);
        _exit(0);
    }
}

int main(void) {
    xmount("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755");
    int con = open("/dev/console", O_RDWR | O_CLOEXEC);
    if (con >= 0) {
        dup2(con, 1);
        dup2(con, 2);
    }
    xmount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    probe_if_asked();
    xmount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    load_modules();
    /* The balloon reports free memory from 2 MiB blocks up; what a process frees on exit lies
     * mostly in smaller ones, and would stay resident on the host. 2^5 pages: 128 KiB up. */
    write_file("/sys/module/page_reporting/parameters/page_reporting_order", "5");

    char image[64], disk[64];
    find_disk("sandlot-image", image, sizeof image);
    find_disk("sandlot-disk", disk, sizeof disk);
    xmount(image, "/lower", "erofs", MS_RDONLY, NULL);
    xmount(disk, "/disk", "ext4", MS_NOATIME, NULL);
    mkdir("/disk/upper", 0755);
    mkdir("/disk/work", 0755);
    xmount("overlay", "/newroot", "overlay", 0, "lowerdir=/lower,upperdir=/disk/upper,workdir=/disk/work");
    int disk_fd = open("/disk", O_RDONLY | O_DIRECTORY); /* inherited by the agent, on purpose */
    if (disk_fd < 0)
        die("open /disk: %s", strerror(errno));

    xmount("proc", "/newroot/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    xmount("sysfs", "/newroot/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    xmount("cgroup2", "/newroot/sys/fs/cgroup", "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    xmount("devtmpfs", "/newroot/dev", "devtmpfs", MS_NOSUID, "mode=0755");
    xmount("devpts", "/newroot/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5");
    unlink("/newroot/dev/ptmx");
    symlink("pts/ptmx", "/newroot/dev/ptmx");
    xmount("shm", "/newroot/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=65536k");
    port_links("/newroot/dev");
    mkdirs("/newroot/.sandlot", 0755);
    xmount("/sandlot", "/newroot/.sandlot", NULL, MS_BIND, NULL);
    xmount(NULL, "/newroot/.sandlot", NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL);

    char hostname[256] = "sandbox", addr[64] = {0}, gw[64] = {0};
    int prefix = 0;
    long long pids = 0, memory = 0;
    FILE *conf = fopen("/sandlot/vm.conf", "r");
    if (!conf)
        die("no /sandlot/vm.conf in the initramfs");
    char line[8192];
    while (fgets(line, sizeof line, conf)) {
        line[strcspn(line, "\n")] = 0;
        char a[4096], b[4096], c[4096];
        if (sscanf(line, "hostname %255s", hostname) == 1)
            continue;
        if (sscanf(line, "net %63s %d %63s", addr, &prefix, gw) == 3)
            continue;
        if (sscanf(line, "limits %lld %lld", &pids, &memory) == 2)
            continue;
        if (sscanf(line, "volume %4095s %4095s %4095s", a, b, c) == 3) { /* tag ro|rw hex(path) */
            char path[4096], target[4200];
            unhex(c, path, sizeof path);
            snprintf(target, sizeof target, "/newroot%s", path);
            mkdirs(target, 0755);
            unsigned long flags = strcmp(b, "ro") == 0 ? MS_RDONLY : 0;
            xmount(a, target, "virtiofs", flags | MS_NOSUID | MS_NODEV, NULL);
        }
    }
    fclose(conf);
    workload_cgroup(pids, memory);
    network(addr[0] ? addr : NULL, prefix, gw);
    if (sethostname(hostname, strlen(hostname)) != 0)
        die("sethostname: %s", strerror(errno));

    if (chdir("/newroot") != 0 || mount(".", "/", NULL, MS_MOVE, NULL) != 0 || chroot(".") != 0 || chdir("/") != 0)
        die("switching to the sandbox's root: %s", strerror(errno));
    char fdenv[64];
    snprintf(fdenv, sizeof fdenv, "SANDLOT_VM_DISK_FD=%d", disk_fd);
    char *argv[] = {AGENT, NULL};
    char *envp[] = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "SANDLOT_AGENT_CONFIG=/.sandlot/run/config.json",
                    "SANDLOT_AGENT_SOCKET=/dev/virtio-ports/org.sandlot.agent",
                    "SANDLOT_VM_CONTROL=/dev/virtio-ports/org.sandlot.control",
                    "SANDLOT_VM_CGROUP=" WORKLOAD_CGROUP, fdenv, NULL};
    execve(AGENT, argv, envp);
    die("exec %s: %s", AGENT, strerror(errno));
    return 1;
}
