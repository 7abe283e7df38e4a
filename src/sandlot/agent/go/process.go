package main

// Processes: start, output fan-out with a replay buffer, exit via our own reaper.
//
// Invariants: `processTable.mu` guards `procs` and `early`; a pid is entered in
// `procs` under that lock in the same critical section as its fork, so the
// reaper (which takes the lock) always finds the process it reaped. A
// process's own `mu` guards its buffer, subscribers and exit fields.

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

const keepExited = 256
const keepExitedFor = 5 * time.Minute
const drainAfterExit = 100 * time.Millisecond
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

type chunk struct {
	fd   int
	data []byte
}

type subscriber struct {
	mu sync.Mutex // held while replaying, so live output waits behind the replay
	s  *stream
}

type process struct {
	mu       sync.Mutex
	info     ProcessInfo
	pgid     int
	stdin    *os.File
	ptyFile  *os.File
	buf      []chunk
	bufBytes int
	subs     map[*subscriber]bool
	readers  sync.WaitGroup
	status   chan syscall.WaitStatus
	done     chan struct{}
	exit     ProcessExit
	exited   bool
	exitedAt time.Time
	oom      bool
	timedOut bool
	oomBase  int64
	ptyStop  *os.File // write end of pumpPty's stop pipe; closed to stop it
	pidsHit  bool
}

type processTable struct {
	a     *agent
	watch *watchdog // nil without limits; set before any process starts
	mu    sync.Mutex
	procs map[int]*process
	early map[int]syscall.WaitStatus // reaped before registration (cannot happen under mu, kept for safety)
	// helpers: children the agent starts for itself (sudo), not listed as processes; each
	// gets its status on its channel.
	helpers map[int]chan syscall.WaitStatus
	fork    sync.Mutex
}

func newProcessTable(a *agent) *processTable {
	return &processTable{a: a, procs: map[int]*process{}, early: map[int]syscall.WaitStatus{},
		helpers: map[int]chan syscall.WaitStatus{}}
}

// spawnHelper forks a child that is not one of the sandbox's listed processes; registered under
// mu with its fork, like start's, so the reaper always finds it.
func (t *processTable) spawnHelper(exe string, argv []string, attr *syscall.ProcAttr) (int, <-chan syscall.WaitStatus, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	pid, err := t.forkExec(exe, argv, attr)
	if err != nil {
		return 0, nil, fmt.Errorf("cannot start %s: %v", argv[0], err)
	}
	ch := make(chan syscall.WaitStatus, 1)
	if ws, ok := t.early[pid]; ok {
		delete(t.early, pid)
		ch <- ws
	} else {
		t.helpers[pid] = ch
	}
	return pid, ch, nil
}

func (t *processTable) get(pid int64) (*process, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.procs[int(pid)]
	if p == nil {
		return nil, errCode(ErrProcessNotFound, "", "process %d not found", pid)
	}
	return p, nil
}

// reap is the init's duty: wait for every child, hand statuses to their process.
// It blocks on SIGCHLD alone (no timer): a signal that arrives while children
// are being collected stays queued in `ch`, and signal.Notify is in place
// before the first collection, so no exit goes unnoticed.
func (t *processTable) reap() {
	ch := make(chan os.Signal, 64)
	notifySigchld(ch)
	for {
		reaped := false
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if err == syscall.EINTR {
				continue
			}
			if pid <= 0 || err != nil {
				break
			}
			reaped = true
			t.mu.Lock()
			p := t.procs[pid]
			if helper, ok := t.helpers[pid]; ok {
				delete(t.helpers, pid)
				helper <- ws
			} else if p == nil {
				t.early[pid] = ws
			}
			t.mu.Unlock()
			if p != nil {
				p.status <- ws
			}
		}
		if reaped {
			t.watch.poke() // exits are activity: a fork bomb's orphans end here
		}
		<-ch
	}
}

func (t *processTable) signalAll(sig syscall.Signal) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, p := range t.procs {
		p.mu.Lock()
		if !p.exited {
			_ = syscall.Kill(-p.pgid, sig)
		}
		p.mu.Unlock()
	}
}

func (t *processTable) prune() {
	// caller holds t.mu
	var exited []*process
	for _, p := range t.procs {
		if p.exited && time.Since(p.exitedAt) > keepExitedFor {
			delete(t.procs, int(p.info.Pid))
		} else if p.exited {
			exited = append(exited, p)
		}
	}
	if len(exited) > keepExited {
		sort.Slice(exited, func(i, j int) bool { return exited[i].exitedAt.Before(exited[j].exitedAt) })
		for _, p := range exited[:len(exited)-keepExited] {
			delete(t.procs, int(p.info.Pid))
		}
	}
}

func lookPath(name string, env []string) (string, bool) {
	if strings.Contains(name, "/") {
		st, err := os.Stat(name)
		return name, err == nil && !st.IsDir() && st.Mode()&0o111 != 0
	}
	path := defaultPath
	for _, kv := range env {
		if strings.HasPrefix(kv, "PATH=") {
			path = kv[5:]
		}
	}
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, true
		}
	}
	return "", false
}

func buildEnv(base, extra map[string]string, u *user) []string {
	env := map[string]string{}
	for k, v := range base {
		env[k] = v
	}
	env["HOME"], env["USER"], env["LOGNAME"] = u.home, u.name, u.name
	if _, ok := env["PATH"]; !ok {
		env["PATH"] = defaultPath
	}
	for k, v := range extra {
		env[k] = v
	}
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

// start forks the process described by p; the caller subscribes before output flows.
func (t *processTable) start(params ProcessStartParams) (*process, error) {
	var argv []string
	switch {
	case params.Cmd != nil && len(params.Argv) > 0:
		return nil, errInvalid("give either argv or cmd, not both")
	case params.Cmd != nil:
		argv = []string{"/bin/sh", "-c", *params.Cmd}
	case len(params.Argv) > 0:
		argv = params.Argv
	default:
		return nil, errInvalid("no command: argv and cmd are both empty")
	}
	userSpec := t.a.config.User
	if params.User != nil && *params.User != "" {
		userSpec = *params.User
	}
	u, err := resolveUser(userSpec)
	if err != nil {
		return nil, err
	}
	cwd := t.a.config.Cwd
	if params.Cwd != nil && *params.Cwd != "" {
		cwd = *params.Cwd
	}
	if st, err := os.Stat(cwd); err != nil {
		return nil, errCode(ErrNotFound, cwd, "working directory not found: %s", cwd)
	} else if !st.IsDir() {
		return nil, errCode(ErrNotADirectory, cwd, "working directory is not a directory: %s", cwd)
	}
	env := buildEnv(t.a.config.Env, params.Env, u)
	exe, ok := lookPath(argv[0], env)
	if !ok {
		return nil, errCode(ErrCommandNotFound, "", "command not found: %s", argv[0])
	}

	p := &process{
		subs:    map[*subscriber]bool{},
		status:  make(chan syscall.WaitStatus, 1),
		done:    make(chan struct{}),
		oomBase: cgroupOOMKills(),
	}
	var childFiles []uintptr
	var closeAfter []*os.File
	attr := &syscall.SysProcAttr{Setsid: true}
	if u.uid != 0 || u.gid != 0 {
		groups := u.groups
		attr.Credential = &syscall.Credential{Uid: u.uid, Gid: u.gid, Groups: groups}
	}
	var outR, errR, ptyStopR *os.File
	if params.Pty != nil {
		master, slave, err := openPty(params.Pty.Rows, params.Pty.Cols)
		if err != nil {
			return nil, err
		}
		p.ptyFile, p.stdin, outR = master, master, master
		if ptyStopR, p.ptyStop, err = os.Pipe(); err != nil {
			master.Close()
			slave.Close()
			return nil, err
		}
		childFiles = []uintptr{slave.Fd(), slave.Fd(), slave.Fd()}
		closeAfter = append(closeAfter, slave)
		attr.Setctty, attr.Ctty = true, 0
		env = append(env, "TERM=xterm-256color")
	} else {
		var stdinR *os.File
		if params.Stdin {
			r, w, err := os.Pipe()
			if err != nil {
				return nil, err
			}
			stdinR, p.stdin = r, w
		} else {
			if stdinR, err = os.Open(os.DevNull); err != nil {
				return nil, err
			}
		}
		oR, oW, err := os.Pipe()
		if err != nil {
			return nil, err
		}
		eR, eW, err := os.Pipe()
		if err != nil {
			return nil, err
		}
		outR, errR = oR, eR
		childFiles = []uintptr{stdinR.Fd(), oW.Fd(), eW.Fd()}
		closeAfter = append(closeAfter, stdinR, oW, eW)
	}
	defer func() {
		for _, f := range closeAfter {
			f.Close()
		}
	}()

	t.mu.Lock()
	pid, err := t.forkExec(exe, argv, &syscall.ProcAttr{Dir: cwd, Env: env, Files: childFiles, Sys: attr})
	if err != nil {
		t.mu.Unlock()
		for _, f := range []*os.File{outR, errR, p.stdin, ptyStopR, p.ptyStop} {
			if f != nil {
				f.Close()
			}
		}
		if err == syscall.EAGAIN {
			t.watch.poke() // a tree may have outgrown the limit: look now
			return nil, errCode(ErrLimit, "", "cannot start %s: the sandbox's pids limit is reached", argv[0])
		}
		if err == syscall.ENOENT || err == syscall.ENOEXEC || err == syscall.EACCES {
			return nil, errCode(ErrCommandNotFound, "", "cannot execute %s: %v", argv[0], err)
		}
		return nil, errCode(ErrInternal, "", "cannot start %s: %v", argv[0], err)
	}
	p.pgid = pid
	cmdStr := params.Cmd
	p.info = ProcessInfo{Pid: int64(pid), Argv: argv, Cmd: cmdStr, Cwd: cwd, User: u.name, Tag: params.Tag,
		Pty: params.Pty != nil, Running: true, StartedAtMs: time.Now().UnixMilli()}
	t.procs[pid] = p
	if ws, ok := t.early[pid]; ok {
		delete(t.early, pid)
		p.status <- ws
	}
	t.prune()
	t.mu.Unlock()
	t.watch.poke()

	p.readers.Add(1)
	if p.ptyFile != nil {
		go p.pumpPty(outR, ptyStopR)
	} else {
		go p.pump(outR, 1)
	}
	if errR != nil {
		p.readers.Add(1)
		go p.pump(errR, 2)
	}
	if params.TimeoutMs > 0 {
		timer := time.AfterFunc(time.Duration(params.TimeoutMs)*time.Millisecond, func() {
			p.mu.Lock()
			if !p.exited {
				p.timedOut = true
				_ = syscall.Kill(-p.pgid, syscall.SIGKILL)
			}
			p.mu.Unlock()
		})
		go func() { <-p.done; timer.Stop() }()
	}
	go p.finishWhenExited(outR, errR)
	return p, nil
}

// forkExec forks with RLIMIT_NPROC set to the pids limit, so every process the
// sandbox starts inherits it; the agent's own limit is restored right after.
//
// In a microVM the agent (PID 1) forks from inside the workload's cgroup, so
// the child is born there and the guest kernel holds it to the pids and
// memory limits; pids.max stops forks, never this move. It moves back at once.
func (t *processTable) forkExec(exe string, argv []string, attr *syscall.ProcAttr) (int, error) {
	limit := t.a.config.PidsLimit
	if limit <= 0 && t.a.workCgroup == "" {
		return syscall.ForkExec(exe, argv, attr)
	}
	t.fork.Lock()
	defer t.fork.Unlock()
	if t.a.workCgroup != "" && joinCgroup(t.a.workCgroup) == nil {
		defer func() { _ = joinCgroup("/sys/fs/cgroup") }()
	}
	if limit <= 0 {
		return syscall.ForkExec(exe, argv, attr)
	}
	var old syscall.Rlimit
	if err := syscall.Getrlimit(rlimitNproc, &old); err != nil {
		return syscall.ForkExec(exe, argv, attr)
	}
	// Only the soft limit: lowering the hard one could not be undone (the
	// agent has no CAP_SYS_RESOURCE), and an agent left at the workload's
	// limit could not create the threads it needs during a fork bomb.
	lim := syscall.Rlimit{Cur: uint64(limit), Max: old.Max}
	if old.Max < lim.Cur {
		lim.Cur = old.Max
	}
	_ = syscall.Setrlimit(rlimitNproc, &lim)
	pid, err := syscall.ForkExec(exe, argv, attr)
	_ = syscall.Setrlimit(rlimitNproc, &old)
	return pid, err
}

// pump copies one output fd to the buffer and the subscribers as it arrives.
func (p *process) pump(r *os.File, fd int) {
	defer p.readers.Done()
	buf := make([]byte, 64*1024)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			p.publish(fd, buf[:n])
		}
		if err != nil {
			return
		}
	}
}

// pumpPty reads a terminal's master side. gVisor neither reports EIO on it once
// the terminal's last user exits nor lets Close interrupt a blocked read, so
// wait in poll(2) on the master and on `stop`, a pipe whose write end is
// closed once the process is gone: no timeout, so an idle terminal costs
// nothing.
func (p *process) pumpPty(master, stop *os.File) {
	defer p.readers.Done()
	defer stop.Close()
	raw, err := master.SyscallConn()
	if err != nil {
		return
	}
	stopFd := int32(stop.Fd())
	buf := make([]byte, 64*1024)
	for {
		ready, stopped := false, false
		var n int
		var rerr error
		err := raw.Control(func(fd uintptr) {
			fds := []pollFd{{fd: int32(fd), events: pollIn}, {fd: stopFd, events: pollIn}}
			if k, _ := poll(fds, -1); k > 0 {
				stopped = fds[1].revents != 0
				if fds[0].revents != 0 {
					ready = true
					n, rerr = syscall.Read(int(fd), buf)
				}
			}
		})
		if err != nil {
			return // the master was closed: we are being stopped
		}
		if ready {
			if n > 0 {
				p.publish(1, buf[:n])
				continue
			}
			if rerr != syscall.EAGAIN && rerr != syscall.EINTR {
				return // EIO or EOF: the terminal is closed
			}
		}
		if stopped {
			return
		}
	}
}

func (p *process) publish(fd int, b []byte) {
	data := append([]byte(nil), b...)
	p.mu.Lock()
	p.buf = append(p.buf, chunk{fd, data})
	p.bufBytes += len(data)
	for p.bufBytes > int(p.limitBuf()) && len(p.buf) > 1 {
		p.bufBytes -= len(p.buf[0].data)
		p.buf = p.buf[1:]
	}
	subs := make([]*subscriber, 0, len(p.subs))
	for s := range p.subs {
		subs = append(subs, s)
	}
	p.mu.Unlock()
	for _, s := range subs {
		s.mu.Lock()
		_ = s.s.data(map[string]int{"fd": fd}, data)
		s.mu.Unlock()
	}
}

func (p *process) limitBuf() int64 { return 1 << 20 }

func (p *process) finishWhenExited(outR, errR *os.File) {
	ws := <-p.status
	drained := make(chan struct{})
	go func() { p.readers.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(drainAfterExit):
		// A background child still holds the pipes: stop reading them.
		if p.ptyStop != nil {
			p.ptyStop.Close()
		}
		outR.Close()
		if errR != nil {
			errR.Close()
		}
		<-drained
	}
	if p.ptyStop != nil {
		p.ptyStop.Close()
	}
	p.mu.Lock()
	ex := ProcessExit{Pid: p.info.Pid, TimedOut: p.timedOut}
	// Out of memory: our watchdog killed one of this process's tree, or the
	// kernel's OOM killer struck in our cgroup while it ran (crun). A shell
	// wrapper then exits 137 rather than dying of the signal itself.
	ex.OomKilled = p.oom || cgroupOOMKills() > p.oomBase
	ex.PidsLimitHit = p.pidsHit
	if ws.Signaled() {
		sig := int64(ws.Signal())
		ex.Signal = &sig
	} else {
		code := int64(ws.ExitStatus())
		ex.ExitCode = &code
	}
	p.exit, p.exited, p.exitedAt = ex, true, time.Now()
	p.info.Running = false
	p.info.Exit = &p.exit
	if p.stdin != nil {
		p.stdin.Close()
	}
	p.mu.Unlock()
	outR.Close()
	if errR != nil {
		errR.Close()
	}
	close(p.done)
}

// follow streams p's output to s (replaying the buffer first when replay) until exit or cancel.
func (p *process) follow(s *stream, replay bool) (interface{}, error) {
	sub := &subscriber{s: s}
	sub.mu.Lock()
	p.mu.Lock()
	p.subs[sub] = true
	var backlog []chunk
	if replay {
		backlog = append(backlog, p.buf...)
	}
	p.mu.Unlock()
	for _, c := range backlog {
		_ = s.data(map[string]int{"fd": c.fd}, c.data)
	}
	sub.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.subs, sub)
		p.mu.Unlock()
	}()
	select {
	case <-p.done:
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.exit, nil
	case <-s.cancel:
		return struct{}{}, nil
	}
}

func handleProcessStart(a *agent, s *stream, raw json.RawMessage, _ []byte) (interface{}, error) {
	var params ProcessStartParams
	if err := decode(raw, &params); err != nil {
		return nil, err
	}
	p, err := a.procs.start(params)
	if err != nil {
		return nil, err
	}
	// Subscribe before the first output can be lost: the pumps only fan out to
	// subscribers, and the buffer keeps what came before.
	_ = s.event(ProcessStarted{Type: "started", Pid: p.info.Pid})
	if params.Stdin && params.Pty == nil {
		go func() {
			for {
				data, err := s.input()
				if err != nil {
					if err == io.EOF {
						p.mu.Lock()
						if p.stdin != nil {
							p.stdin.Close()
						}
						p.mu.Unlock()
					}
					return
				}
				if _, err := p.stdin.Write(data); err != nil {
					return
				}
			}
		}()
	}
	return p.follow(s, true)
}

func handleProcessConnect(a *agent, s *stream, raw json.RawMessage, _ []byte) (interface{}, error) {
	var params ProcessSelector
	if err := decode(raw, &params); err != nil {
		return nil, err
	}
	p, err := a.procs.get(params.Pid)
	if err != nil {
		return nil, err
	}
	return p.follow(s, true)
}

func handleProcessList(a *agent, _ *stream, _ json.RawMessage, _ []byte) (interface{}, error) {
	a.procs.mu.Lock()
	defer a.procs.mu.Unlock()
	out := ProcessListResult{Processes: []ProcessInfo{}}
	for _, p := range a.procs.procs {
		p.mu.Lock()
		out.Processes = append(out.Processes, p.info)
		p.mu.Unlock()
	}
	sort.Slice(out.Processes, func(i, j int) bool { return out.Processes[i].Pid < out.Processes[j].Pid })
	return out, nil
}

func handleProcessInput(a *agent, _ *stream, raw json.RawMessage, payload []byte) (interface{}, error) {
	var params ProcessInputParams
	if err := decode(raw, &params); err != nil {
		return nil, err
	}
	p, err := a.procs.get(params.Pid)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	stdin, exited := p.stdin, p.exited
	p.mu.Unlock()
	if exited {
		return nil, errCode(ErrProcessNotFound, "", "process %d is not running", params.Pid)
	}
	if stdin == nil {
		return nil, errInvalid("process %d was started without stdin", params.Pid)
	}
	if len(payload) > 0 {
		if _, err := stdin.Write(payload); err != nil {
			return nil, errCode(ErrProcessNotFound, "", "process %d no longer reads its input: %v", params.Pid, err)
		}
	}
	if params.Eof && p.ptyFile == nil {
		stdin.Close()
	}
	return struct{}{}, nil
}

func handleProcessSignal(a *agent, _ *stream, raw json.RawMessage, _ []byte) (interface{}, error) {
	var params ProcessSignalParams
	if err := decode(raw, &params); err != nil {
		return nil, err
	}
	if params.Signal <= 0 || params.Signal > 64 {
		return nil, errInvalid("bad signal number %d", params.Signal)
	}
	p, err := a.procs.get(params.Pid)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	// After the process itself exited, its group may live on (background
	// jobs, a fork bomb): a group signal still reaches them.
	if p.exited && !params.Group {
		return nil, errCode(ErrProcessNotFound, "", "process %d is not running", params.Pid)
	}
	target := int(params.Pid)
	if params.Group {
		target = -p.pgid
	}
	if err := syscall.Kill(target, syscall.Signal(params.Signal)); err != nil {
		return nil, errCode(ErrProcessNotFound, "", "process %d: %v", params.Pid, err)
	}
	return struct{}{}, nil
}

func handleProcessResize(a *agent, _ *stream, raw json.RawMessage, _ []byte) (interface{}, error) {
	var params ProcessResizeParams
	if err := decode(raw, &params); err != nil {
		return nil, err
	}
	p, err := a.procs.get(params.Pid)
	if err != nil {
		return nil, err
	}
	if p.ptyFile == nil {
		return nil, errInvalid("process %d has no terminal to resize", params.Pid)
	}
	if params.Rows <= 0 || params.Cols <= 0 || params.Rows > 10000 || params.Cols > 10000 {
		return nil, errInvalid("bad terminal size %dx%d", params.Rows, params.Cols)
	}
	return struct{}{}, setWinsize(p.ptyFile, params.Rows, params.Cols)
}
