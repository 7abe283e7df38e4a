// Command sandlot-agent is the init of every Sandlot sandbox.
//
// It is a static binary run from the read-only bundle at /.sandlot, so it works
// in any image. It reaps zombies, forwards signals to the processes it started,
// enforces the sandbox's memory limit from inside, and serves the node over
// one Unix socket that it dials (and redials) at config.socket_path. The wire
// protocol is defined in src/sandlot/agent/protocol.py; protocol_gen.go is
// generated from it.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"
)

type agent struct {
	config    AgentConfig
	procs     *processTable
	startedAt int64
	// workCgroup: in a microVM, the cgroup the sandbox's processes are started in (see forkExec)
	workCgroup string
}

func loadConfig() (AgentConfig, error) {
	path := os.Getenv("SANDLOT_AGENT_CONFIG")
	if path == "" {
		path = "/.sandlot/run/config.json"
	}
	var c AgentConfig
	b, err := os.ReadFile(path)
	if err != nil {
		return c, err
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("%s: %v", path, err)
	}
	if c.Cwd == "" {
		c.Cwd = "/"
	}
	if c.OutputBufferBytes <= 0 {
		c.OutputBufferBytes = 1 << 20
	}
	return c, nil
}

func main() {
	if isSudo() { // run through an image's sudo link: the client of the agent's sudo service
		os.Exit(sudoMain(os.Args[1:]))
	}
	cfg, err := loadConfig()
	if err != nil {
		fmt.Fprintln(os.Stderr, "sandlot-agent: cannot read config:", err)
		os.Exit(1)
	}
	if err := prepareInit(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "sandlot-agent: preparing the sandbox:", err)
		os.Exit(1)
	}
	if cfg.ReserveThreads > 0 { // before any process of the sandbox can take the pids they need
		if have := reserveThreads(int(cfg.ReserveThreads)); have < int(cfg.ReserveThreads) {
			fmt.Fprintf(os.Stderr, "sandlot-agent: holding %d threads of the %d wanted\n", have, cfg.ReserveThreads)
		}
	}
	if os.Getpid() != 1 {
		// Not init (tests on a host): still become the parent of orphans.
		_ = prctlSubreaper()
	}
	a := &agent{config: cfg, startedAt: time.Now().UnixMilli(), workCgroup: os.Getenv("SANDLOT_VM_CGROUP")}
	a.procs = newProcessTable(a)
	if cfg.MemoryLimitBytes > 0 || cfg.PidsLimit > 0 {
		a.procs.watch = newWatchdog(a.procs, cfg.MemoryLimitBytes, cfg.PidsLimit)
		go a.procs.watch.run()
	}
	go a.procs.reap()
	go a.forwardSignals()
	go a.serveSudo()
	// In a microVM the init names the node link (a virtio-serial port) and the VM's control port.
	link := cfg.SocketPath
	if env := os.Getenv("SANDLOT_AGENT_SOCKET"); env != "" {
		link = env
	}
	if ctl := os.Getenv("SANDLOT_VM_CONTROL"); ctl != "" {
		go serveVMControl(ctl, os.Getenv("SANDLOT_VM_DISK_FD"))
	}
	// Redial at once after a drop (a restore reconnects within ~50 ms), then
	// back off to once a second: a node that is down (restarting) must not
	// keep every sandbox busy.
	delay := redialMin
	for {
		c, err := dialNode(link)
		if err != nil {
			time.Sleep(delay)
			if delay *= 2; delay > redialMax {
				delay = redialMax
			}
			continue
		}
		delay = redialMin
		cn := newConn(c)
		hello := Hello{Type: "hello", Version: ProtocolVersion, AgentPid: int64(os.Getpid()), StartedAtMs: a.startedAt}
		if err := cn.send(0, KindEvent, hello, nil); err == nil {
			cn.serve(a)
		}
		c.Close()
		time.Sleep(delay)
	}
}

const (
	redialMin = 50 * time.Millisecond
	redialMax = time.Second
)

// dialNode connects to the node: a Unix socket (gvisor, container) or a virtio-serial port (microvm).
func dialNode(path string) (io.ReadWriteCloser, error) {
	if isCharDevice(path) {
		return openPort(path)
	}
	return net.Dial("unix", path)
}

func prctlSubreaper() error {
	const prSetChildSubreaper = 36
	_, _, e := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0)
	if e != 0 {
		return e
	}
	return nil
}

// forwardSignals passes what the runtime sends to init on to every process group we started.
func (a *agent) forwardSignals() {
	ch := make(chan os.Signal, 16)
	signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2)
	for sig := range ch {
		a.procs.signalAll(sig.(syscall.Signal))
	}
}

type handler func(a *agent, s *stream, params json.RawMessage, payload []byte) (interface{}, error)

var handlers = map[string]handler{
	MethodPing: func(a *agent, s *stream, _ json.RawMessage, _ []byte) (interface{}, error) {
		return Hello{Type: "hello", Version: ProtocolVersion, AgentPid: int64(os.Getpid()), StartedAtMs: a.startedAt}, nil
	},
	MethodProcessStart:   handleProcessStart,
	MethodProcessList:    handleProcessList,
	MethodProcessConnect: handleProcessConnect,
	MethodProcessInput:   handleProcessInput,
	MethodProcessSignal:  handleProcessSignal,
	MethodProcessResize:  handleProcessResize,
	MethodFsRead:         handleRead,
	MethodFsWrite:        handleWrite,
	MethodFsList:         handleList,
	MethodFsStat:         handleStat,
	MethodFsExists:       handleExists,
	MethodFsMkdir:        handleMkdir,
	MethodFsRename:       handleRename,
	MethodFsRemove:       handleRemove,
	MethodFsTarRead:      handleTarRead,
	MethodFsTarWrite:     handleTarWrite,
	MethodFsWatch:        handleWatch,
	MethodPortConnect:    handlePortConnect,
	MethodNetListeners:   handleListeners,
	MethodLimitsCheck: func(a *agent, _ *stream, _ json.RawMessage, _ []byte) (interface{}, error) {
		a.procs.watch.poke()
		return struct{}{}, nil
	},
}

func (a *agent) handle(s *stream, method string, params json.RawMessage, payload []byte) {
	defer func() {
		if r := recover(); r != nil {
			s.finish(nil, fmt.Errorf("agent bug in %s: %v\n%s", method, r, debug.Stack()))
		}
	}()
	h, ok := handlers[method]
	if !ok {
		s.finish(nil, errInvalid("unknown method %q", method))
		return
	}
	result, err := h(a, s, params, payload)
	s.finish(result, err)
}

// decode parses params into v; a malformed one is the caller's error.
func decode(params json.RawMessage, v interface{}) error {
	if len(params) == 0 {
		return nil
	}
	if err := json.Unmarshal(params, v); err != nil {
		return errInvalid("bad params: %v", err)
	}
	return nil
}
