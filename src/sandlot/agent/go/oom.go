package main

// The sandbox's memory and pids limits, enforced from inside: when the
// processes we started use more memory than the limit, the largest one is
// killed and reported as out of memory, so the sandbox (and its init) survive
// a memory hog; a tree that outgrows the pids limit is killed whole. The host
// cgroup stays as a backstop a little above the limits.

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

var pageSize = int64(os.Getpagesize())

func readProcStat(pid int) (ppid int, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 2 {
		return 0, false
	}
	ppid, err = strconv.Atoi(f[1])
	return ppid, err == nil
}

func rssBytes(pid int) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	n, _ := strconv.ParseInt(f[1], 10, 64)
	return n * pageSize
}

// owner finds the tracked process that pid belongs to (itself or an ancestor).
func (t *processTable) owner(pid int, parents map[int]int) *process {
	for i := 0; i < 64 && pid > 1; i++ {
		t.mu.Lock()
		p := t.procs[pid]
		t.mu.Unlock()
		if p != nil {
			return p
		}
		pid = parents[pid]
	}
	return nil
}

// The watchdog enforces the memory and pids limits from inside. It costs
// nothing while the sandbox is idle: it sleeps on a channel, with no timer,
// until something may have changed, then scans every 10 ms (a readdir) and
// fully every 30 ms (two files per process) until the sandbox is calm again.
// What wakes it (poke):
//   - a process the agent starts, and every SIGCHLD the agent (init) gets
//     (each exit, an orphan of a fork bomb's among them);
//   - the node, over the protocol (limits.check), when the sandbox's host
//     cgroup shows memory or task growth (node/limits.py): the host sees every
//     page and task the sandbox adds without waking it.
//
// Memory: over the limit, the largest process is killed (out of memory).
// Pids: gVisor does not apply RLIMIT_NPROC to root, and its sentry dies when
// the host pids cgroup fills up, so a tree that outgrows the limit (a fork
// bomb) is killed whole, before the host limit is near.
type watchdog struct {
	t         *processTable
	memLimit  int64
	pidsLimit int64
	wake      chan struct{}
	// Kernel threads (kthreadd, pid 2, and its children) are in /proc only
	// inside a microVM; they are not the sandbox's processes. Counted at
	// each full scan, so the cheap check can leave them out (with slack for
	// the kworkers the kernel starts meanwhile).
	kthreads, slack int
}

const (
	watchTick = 10 * time.Millisecond
	// A full scan every fullEvery ticks; asleep again after calmScans full
	// scans in a row that saw neither more processes nor memory grow by more
	// than calmGrowth bytes.
	fullEvery  = 3
	calmScans  = 4
	calmGrowth = 1 << 20
)

func newWatchdog(t *processTable, memLimit, pidsLimit int64) *watchdog {
	return &watchdog{t: t, memLimit: memLimit, pidsLimit: pidsLimit, wake: make(chan struct{}, 1)}
}

// poke wakes the watchdog (or keeps it awake); it never blocks. Safe on nil.
func (w *watchdog) poke() {
	if w == nil {
		return
	}
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *watchdog) run() {
	for range w.wake {
		w.watchUntilCalm()
	}
}

func (w *watchdog) watchUntilCalm() {
	tick := time.NewTicker(watchTick)
	defer tick.Stop()
	calm, lastCount, lastRSS := 0, -1, int64(-1)
	for i := 0; ; i++ {
		select {
		case <-w.wake: // poked again meanwhile: something is still happening
			calm = 0
		default:
		}
		count, rss, full := w.enforce(i%fullEvery == 0)
		if full {
			if lastCount >= 0 && count <= lastCount && rss <= lastRSS+calmGrowth {
				calm++
			} else {
				calm = 0
			}
			lastCount, lastRSS = count, rss
			if calm >= calmScans {
				return
			}
		}
		<-tick.C
	}
}

// enforce makes one pass: a readdir of /proc, and a full scan when `full` or
// when the pids limit may be exceeded. It returns the number of processes
// seen, their total RSS (full scans with a memory limit only) and whether
// the scan was full.
func (w *watchdog) enforce(full bool) (int, int64, bool) {
	t, memLimit, pidsLimit := w.t, w.memLimit, w.pidsLimit
	self := os.Getpid()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, 0, false
	}
	count := countPids(entries)
	over := pidsLimit > 0 && int64(count-w.kthreads) > pidsLimit+1+int64(w.slack)
	if !full && !over {
		return count, 0, false
	}
	if over && self == 1 {
		// A fork bomb outruns any scan: stop every process (init is
		// exempt) so the tree we kill is the one that exists, then resume
		// the rest. As init, a kill(-1) reaches the whole sandbox.
		_ = syscall.Kill(-1, syscall.SIGSTOP)
		entries, _ = os.ReadDir("/proc")
	}
	parents := map[int]int{}
	kernel := 0
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		if ppid, ok := readProcStat(pid); ok {
			if pid == 2 || ppid == 2 {
				kernel++
				continue
			}
			parents[pid] = ppid
		}
	}
	if w.kthreads = kernel; kernel > 0 {
		w.slack = 8
	}
	// As init, every process but us is the sandbox's: orphans (re-parented
	// to us, so owned by no tracked process) form a tree of their own (nil).
	// Elsewhere (tests on a host) only our own processes' trees count.
	owners := map[int]*process{}
	trees := map[*process][]int{}
	for pid := range parents {
		p := t.owner(pid, parents)
		if p == nil && self != 1 {
			continue
		}
		owners[pid] = p
		trees[p] = append(trees[p], pid)
	}
	if pidsLimit > 0 && int64(len(owners)) > pidsLimit {
		var worst *process
		most := -1
		for p, pids := range trees {
			if len(pids) > most {
				worst, most = p, len(pids)
			}
		}
		if worst != nil {
			worst.mu.Lock()
			worst.pidsHit = true
			worst.mu.Unlock()
		}
		for _, pid := range trees[worst] {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		if self == 1 {
			_ = syscall.Kill(-1, syscall.SIGCONT)
		}
		return len(owners), 0, true
	}
	if over && self == 1 {
		_ = syscall.Kill(-1, syscall.SIGCONT)
	}
	if memLimit <= 0 {
		return len(owners), 0, true
	}
	var total, biggest int64
	victim := 0
	for pid := range owners {
		r := rssBytes(pid)
		total += r
		if r > biggest {
			biggest, victim = r, pid
		}
	}
	if total <= memLimit || victim == 0 {
		return len(owners), total, true
	}
	if p := owners[victim]; p != nil {
		p.mu.Lock()
		p.oom = true
		p.mu.Unlock()
	}
	_ = syscall.Kill(victim, syscall.SIGKILL)
	return len(owners), total, true
}

// cgroupOOMKills reads the kernel's OOM kill count of our cgroup (crun mounts
// it read-only); -1 when there is none (gVisor).
func cgroupOOMKills() int64 {
	b, err := os.ReadFile("/sys/fs/cgroup/memory/memory.oom_control")
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == "oom_kill" {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			return n
		}
	}
	return -1
}

func countPids(entries []os.DirEntry) int {
	n := 0
	for _, e := range entries {
		if c := e.Name()[0]; c >= '0' && c <= '9' {
			n++
		}
	}
	return n
}
