package main

// A size-limited /dev under gVisor.
//
// gVisor mounts its own /dev (a tmpfs) and ignores the OCI config's size
// option for it, so a process writing into /dev fills the sandbox's memory
// until the host cgroup kills the whole sandbox. The node gives the agent,
// and only the agent, CAP_SYS_ADMIN under gVisor; as init, before any other
// process exists, the agent mounts a tmpfs of DevBytes over /dev, copies the
// device nodes gVisor made into it, mounts a fresh devpts and a /dev/shm of
// ShmBytes, then drops CAP_SYS_ADMIN from every one of its threads.
// (This gVisor cannot mount a new devpts nor bind recursively: its devpts is
// bound aside, to /.sandlot/run, while /dev is covered, then bound back.)
// A full /dev or /dev/shm is then ENOSPC, and the sandbox lives.
//
// Invariant: in gVisor and container sandboxes, no process the agent starts
// ever holds CAP_SYS_ADMIN (in a microVM the guest kernel is the boundary, and
// root there keeps it). The agent drops it whenever it finds it (configured or not)
// from the bounding, inheritable, permitted and effective sets of every OS thread
// (the Go runtime runs the syscalls on each thread, the others stopped meanwhile;
// a thread made later copies its creator's sets), then reads every thread's sets
// back from /proc and refuses to serve if one still holds it. A process it starts
// (root, no file capabilities) gets inheritable|bounding, neither of which holds it.
// (It used to re-execute itself instead: a second Go start, 40 ms under gVisor's
// ptrace platform on a busy host, on every sandbox's start.)

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"unsafe"
)

const (
	devStaging    = "/.sandlot/run"
	capSysAdmin   = 21
	capVersion3   = 0x20080522
	prCapbsetDrop = 24
)

type capHeader struct {
	version uint32
	pid     int32
}

type capData struct {
	effective, permitted, inheritable uint32
}

func capGet() ([2]capData, error) {
	var data [2]capData
	hdr := capHeader{version: capVersion3}
	if _, _, e := syscall.RawSyscall(syscall.SYS_CAPGET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0); e != 0 {
		return data, e
	}
	return data, nil
}

func hasSysAdmin() bool {
	data, err := capGet()
	return err == nil && (data[0].effective|data[0].permitted|data[0].inheritable)&(1<<capSysAdmin) != 0
}

// dropHeader and dropSets are what every thread passes to capset: globals, so that
// their addresses stay valid while the runtime runs the call on each thread.
var (
	dropHeader capHeader
	dropSets   [2]capData
)

// dropSysAdmin removes CAP_SYS_ADMIN from the bounding, inheritable, permitted
// and effective sets of every thread of the agent, then checks that none holds it.
func dropSysAdmin() error {
	if _, _, e := syscall.AllThreadsSyscall(syscall.SYS_PRCTL, prCapbsetDrop, capSysAdmin, 0); e != 0 {
		return fmt.Errorf("dropping CAP_SYS_ADMIN from the bounding set: %v", e)
	}
	data, err := capGet()
	if err != nil {
		return fmt.Errorf("capget: %v", err)
	}
	data[0].effective &^= 1 << capSysAdmin
	data[0].permitted &^= 1 << capSysAdmin
	data[0].inheritable &^= 1 << capSysAdmin
	dropHeader, dropSets = capHeader{version: capVersion3}, data
	if _, _, e := syscall.AllThreadsSyscall(syscall.SYS_CAPSET, uintptr(unsafe.Pointer(&dropHeader)),
		uintptr(unsafe.Pointer(&dropSets[0])), 0); e != 0 {
		return fmt.Errorf("capset: %v", e)
	}
	return noThreadHoldsSysAdmin()
}

// noThreadHoldsSysAdmin reads the capability sets of each of the agent's threads.
func noThreadHoldsSysAdmin() error {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return err
	}
	for _, t := range tasks {
		f, err := os.Open("/proc/self/task/" + t.Name() + "/status")
		if err != nil {
			if os.IsNotExist(err) { // the thread exited meanwhile
				continue
			}
			return err
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			name, value, ok := strings.Cut(sc.Text(), ":")
			if !ok || !strings.HasPrefix(name, "Cap") || name == "CapAmb" {
				continue
			}
			mask, err := strconv.ParseUint(strings.TrimSpace(value), 16, 64)
			if err != nil || mask&(1<<capSysAdmin) != 0 {
				f.Close()
				return fmt.Errorf("thread %s still holds CAP_SYS_ADMIN (%s %s)", t.Name(), name, strings.TrimSpace(value))
			}
		}
		f.Close()
	}
	return nil
}

type devEntry struct {
	path   string
	mode   uint32
	rdev   uint64
	target string
}

// snapshotDev lists what the runtime put in /dev (mount points excluded).
func snapshotDev() ([]devEntry, error) {
	var out []devEntry
	err := filepath.Walk("/dev", func(path string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if path == "/dev" {
			return nil
		}
		if path == "/dev/pts" || path == "/dev/shm" {
			return filepath.SkipDir
		}
		st, ok := info.Sys().(*syscall.Stat_t)
		if !ok {
			return nil
		}
		e := devEntry{path: path, mode: st.Mode, rdev: st.Rdev}
		if info.Mode()&os.ModeSymlink != 0 {
			if e.target, err = os.Readlink(path); err != nil {
				return err
			}
		}
		out = append(out, e)
		return nil
	})
	return out, err
}

// setupDev replaces the runtime's /dev with a copy on a tmpfs of devBytes, with a /dev/shm of shmBytes.
func setupDev(devBytes, shmBytes int64) error {
	entries, err := snapshotDev()
	if err != nil {
		return fmt.Errorf("reading /dev: %v", err)
	}
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	if err := syscall.Mount("/dev/pts", devStaging, "", syscall.MS_BIND, ""); err != nil {
		return fmt.Errorf("binding /dev/pts aside: %v", err)
	}
	if err := syscall.Mount("tmpfs", "/dev", "tmpfs", syscall.MS_NOSUID, fmt.Sprintf("mode=755,size=%d", devBytes)); err != nil {
		return fmt.Errorf("mounting a tmpfs on /dev: %v", err)
	}
	for _, e := range entries {
		perm := e.mode & 0o7777
		switch e.mode & syscall.S_IFMT {
		case syscall.S_IFDIR:
			err = syscall.Mkdir(e.path, perm)
		case syscall.S_IFLNK:
			err = os.Symlink(e.target, e.path)
		case syscall.S_IFCHR, syscall.S_IFBLK:
			err = syscall.Mknod(e.path, e.mode, int(e.rdev))
		default:
			continue // sockets and files: nothing the runtime makes
		}
		if err != nil {
			return fmt.Errorf("recreating %s: %v", e.path, err)
		}
	}
	steps := []struct {
		what string
		do   func() error
	}{
		{"mkdir /dev/pts", func() error { return syscall.Mkdir("/dev/pts", 0o755) }},
		{"binding /dev/pts back", func() error { return syscall.Mount(devStaging, "/dev/pts", "", syscall.MS_BIND, "") }},
		{"unmounting " + devStaging, func() error { return syscall.Unmount(devStaging, 0) }},
		{"mkdir /dev/shm", func() error { return syscall.Mkdir("/dev/shm", 0o1777) }},
		{"mounting /dev/shm", func() error {
			return syscall.Mount("shm", "/dev/shm", "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC,
				fmt.Sprintf("mode=1777,size=%d", shmBytes))
		}},
	}
	for _, step := range steps {
		if err := step.do(); err != nil {
			return fmt.Errorf("%s: %v", step.what, err)
		}
	}
	return nil
}

// prepareInit runs first in main: as init holding CAP_SYS_ADMIN, make /dev
// (when the config asks) and give the capability up for good. Returns only
// when the agent may serve (it holds no CAP_SYS_ADMIN).
func prepareInit(cfg AgentConfig) error {
	if os.Getpid() != 1 || !hasSysAdmin() {
		return nil
	}
	if os.Getenv("SANDLOT_VM_CONTROL") != "" {
		// A microVM's init named the VM's control port: the guest kernel is the boundary,
		// and root in it keeps its capabilities (the agent freezes the disk for
		// checkpoints; Docker inside needs them). The VM's init sets this, never a user.
		return nil
	}
	if cfg.DevBytes > 0 {
		if err := setupDev(cfg.DevBytes, cfg.ShmBytes); err != nil {
			return err
		}
	}
	if err := dropSysAdmin(); err != nil {
		return err
	}
	if hasSysAdmin() { // never serve privileged
		return fmt.Errorf("CAP_SYS_ADMIN survived the drop")
	}
	return nil
}
