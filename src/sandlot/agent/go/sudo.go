package main

// sudo without setuid. gVisor (the release Debian ships) runs every process with
// PR_SET_NO_NEW_PRIVS, so a setuid sudo can never become root there. Instead the
// agent, which runs as root, starts the command for the caller: the agent binary
// invoked as `sudo` (an image links /usr/local/bin/sudo to /.sandlot/sandlot-agent)
// is the client. It connects to the agent's abstract Unix socket, passes its
// stdin, stdout and stderr (SCM_RIGHTS) with the command, environment and working
// directory, forwards SIGINT/SIGTERM/SIGHUP, and exits with the command's status.
//
// Only users named in /etc/sandlot/sudoers (one per line; the file must belong to
// root and be writable by nobody else) may use it, as their passwordless sudo: an
// image opts in by writing that file (the e2b-base image lists `user`). The
// caller's uid comes from the kernel (SO_PEERCRED), never from the request.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
)

const sudoSocket = "@sandlot-sudo"
const sudoersFile = "/etc/sandlot/sudoers"
const securePath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

type sudoRequest struct {
	Argv []string `json:"argv"`
	Env  []string `json:"env"`
	Cwd  string   `json:"cwd"`
	User string   `json:"user"`
}

type sudoReply struct {
	Error  string `json:"error,omitempty"`
	Exit   int    `json:"exit"`
	Signal int    `json:"signal,omitempty"`
}

// sudoers lists who may use the agent's sudo, from a file only root can have written.
func sudoers(path string) map[string]bool {
	st, err := os.Lstat(path)
	if err != nil || !st.Mode().IsRegular() || st.Mode().Perm()&0o022 != 0 {
		return nil
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); !ok || sys.Uid != 0 {
		return nil
	}
	allowed := map[string]bool{}
	for _, f := range readColonFile(path) {
		allowed[strings.TrimSpace(f[0])] = true
	}
	return allowed
}

// serveSudo answers `sudo` clients for as long as the agent runs.
func (a *agent) serveSudo() {
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sudoSocket, Net: "unix"})
	if err != nil {
		fmt.Fprintln(os.Stderr, "sandlot-agent: sudo service unavailable:", err)
		return
	}
	for {
		c, err := l.AcceptUnix()
		if err != nil {
			continue
		}
		go a.sudo(c)
	}
}

func (a *agent) sudo(c *net.UnixConn) {
	defer c.Close()
	reply := func(r sudoReply) { _ = json.NewEncoder(c).Encode(r) }
	raw, err := c.SyscallConn()
	if err != nil {
		return
	}
	var cred *syscall.Ucred
	_ = raw.Control(func(fd uintptr) {
		cred, err = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	})
	if err != nil || cred == nil {
		reply(sudoReply{Error: "cannot tell who is asking", Exit: 1})
		return
	}
	buf, oob := make([]byte, 256*1024), make([]byte, syscall.CmsgSpace(3*4))
	n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		return
	}
	files := receivedFiles(oob[:oobn])
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	var req sudoRequest // the first JSON value: a signal the client forwards may follow it at once
	if err := json.NewDecoder(bytes.NewReader(buf[:n])).Decode(&req); err != nil || len(req.Argv) == 0 || len(files) != 3 {
		reply(sudoReply{Error: "malformed request", Exit: 1})
		return
	}
	caller, err := resolveUser(fmt.Sprint(cred.Uid))
	if err != nil || (cred.Uid != 0 && !sudoers(sudoersFile)[caller.name]) {
		reply(sudoReply{Error: fmt.Sprintf("%s is not allowed to run sudo in this sandbox", userName(caller, cred.Uid)), Exit: 1})
		return
	}
	pid, wait, err := a.procs.runAs(req, files)
	if err != nil {
		reply(sudoReply{Error: err.Error(), Exit: 1})
		return
	}
	go forwardSignals(c, pid) // the client's SIGINT/SIGTERM/SIGHUP, until it hangs up
	status := <-wait
	if status.Signaled() {
		reply(sudoReply{Exit: 128 + int(status.Signal()), Signal: int(status.Signal())})
		return
	}
	reply(sudoReply{Exit: status.ExitStatus()})
}

func forwardSignals(c *net.UnixConn, pid int) {
	dec := json.NewDecoder(c)
	for {
		var msg struct{ Signal int }
		if dec.Decode(&msg) != nil {
			return
		}
		if msg.Signal == int(syscall.SIGINT) || msg.Signal == int(syscall.SIGTERM) || msg.Signal == int(syscall.SIGHUP) {
			_ = syscall.Kill(-pid, syscall.Signal(msg.Signal))
		}
	}
}

func userName(u *user, uid uint32) string {
	if u != nil {
		return u.name
	}
	return fmt.Sprintf("uid %d", uid)
}

func receivedFiles(oob []byte) []*os.File {
	msgs, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var files []*os.File
	for _, m := range msgs {
		fds, err := syscall.ParseUnixRights(&m)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			files = append(files, os.NewFile(uintptr(fd), "sudo-stdio"))
		}
	}
	return files
}

// runAs starts req as its user (its own process group) with the caller's stdio; the channel
// yields its status once it exits.
func (t *processTable) runAs(req sudoRequest, files []*os.File) (int, <-chan syscall.WaitStatus, error) {
	u, err := resolveUser(req.User)
	if err != nil {
		return 0, nil, err
	}
	env := buildEnv(nil, envMap(req.Env), u)
	exe, ok := lookPath(req.Argv[0], env)
	if !ok {
		return 0, nil, fmt.Errorf("%s: command not found", req.Argv[0])
	}
	cwd := req.Cwd
	if st, err := os.Stat(cwd); err != nil || !st.IsDir() {
		cwd = u.home
	}
	attr := &syscall.SysProcAttr{Setpgid: true}
	if u.uid != 0 || u.gid != 0 {
		attr.Credential = &syscall.Credential{Uid: u.uid, Gid: u.gid, Groups: u.groups}
	}
	fds := []uintptr{files[0].Fd(), files[1].Fd(), files[2].Fd()}
	return t.spawnHelper(exe, req.Argv, &syscall.ProcAttr{Dir: cwd, Env: env, Files: fds, Sys: attr})
}

func envMap(env []string) map[string]string {
	out := map[string]string{}
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok {
			out[k] = v
		}
	}
	return out
}

// ---------------------------------------------------------------- the client

// sudoMain is the agent binary run as `sudo`: it asks the agent to run the command.
func sudoMain(args []string) int {
	req, err := parseSudoArgs(args, os.Environ())
	if err != nil {
		fmt.Fprintln(os.Stderr, "sudo:", err)
		return 1
	}
	if len(req.Argv) == 0 {
		fmt.Fprintln(os.Stderr, "usage: sudo [-n] [-E] [-H] [-i | -s] [-u user] [--] command [args...]")
		return 1
	}
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: sudoSocket, Net: "unix"})
	if err != nil {
		fmt.Fprintln(os.Stderr, "sudo: the sandbox's agent does not answer:", err)
		return 1
	}
	defer c.Close()
	body, _ := json.Marshal(req)
	rights := syscall.UnixRights(int(os.Stdin.Fd()), int(os.Stdout.Fd()), int(os.Stderr.Fd()))
	if _, _, err := c.WriteMsgUnix(body, rights, nil); err != nil {
		fmt.Fprintln(os.Stderr, "sudo:", err)
		return 1
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		for sig := range sigs {
			_ = json.NewEncoder(c).Encode(map[string]int{"signal": int(sig.(syscall.Signal))})
		}
	}()
	var reply sudoReply
	if err := json.NewDecoder(bufio.NewReader(c)).Decode(&reply); err != nil {
		fmt.Fprintln(os.Stderr, "sudo: the agent went away:", err)
		return 1
	}
	if reply.Error != "" {
		fmt.Fprintln(os.Stderr, "sudo:", reply.Error)
	}
	return reply.Exit
}

// parseSudoArgs understands the options scripts use: -n -E -H -k -S (accepted), -u USER, -i, -s, --.
func parseSudoArgs(args, environ []string) (sudoRequest, error) {
	req := sudoRequest{User: "root"}
	preserve, login, shell := false, false, false
	i := 0
	for ; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			i++
			break
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			break
		}
		if strings.HasPrefix(a, "--user=") {
			req.User = strings.TrimPrefix(a, "--user=")
			continue
		}
		switch a {
		case "--non-interactive", "--set-home", "--stdin", "--reset-timestamp":
			continue
		case "--preserve-env":
			preserve = true
			continue
		case "--login":
			login = true
			continue
		case "--shell":
			shell = true
			continue
		case "--user":
			if i+1 >= len(args) {
				return req, fmt.Errorf("option --user needs a user")
			}
			i++
			req.User = args[i]
			continue
		}
		for j := 1; j < len(a); j++ {
			switch a[j] {
			case 'n', 'H', 'k', 'K', 'S', 'b', 'P':
			case 'E':
				preserve = true
			case 'i':
				login = true
			case 's':
				shell = true
			case 'u':
				rest := a[j+1:]
				if rest == "" {
					if i+1 >= len(args) {
						return req, fmt.Errorf("option -u needs a user")
					}
					i++
					rest = args[i]
				}
				req.User = rest
				j = len(a)
			default:
				return req, fmt.Errorf("option -%c is not supported by this sandbox's sudo", a[j])
			}
		}
	}
	cmd := args[i:]
	target, err := resolveUser(req.User)
	if err != nil {
		return req, fmt.Errorf("unknown user %s", req.User)
	}
	req.Cwd, _ = os.Getwd()
	switch {
	case login || shell:
		sh := loginShell(target.name)
		if login {
			req.Cwd = target.home
		}
		argv := []string{sh}
		if login {
			argv[0] = sh
			argv = append(argv, "-l")
		}
		if len(cmd) > 0 {
			argv = append(argv, "-c", strings.Join(cmd, " "))
		}
		req.Argv = argv
	default:
		req.Argv = cmd
	}
	me := os.Getenv("USER")
	if preserve {
		req.Env = append([]string(nil), environ...)
	} else {
		for _, kv := range environ {
			if k, _, _ := strings.Cut(kv, "="); k == "TERM" || k == "LANG" || k == "LC_ALL" || k == "COLORTERM" {
				req.Env = append(req.Env, kv)
			}
		}
		req.Env = append(req.Env, "PATH="+securePath)
	}
	req.Env = append(req.Env, "SUDO_USER="+me, fmt.Sprintf("SUDO_UID=%d", os.Getuid()),
		fmt.Sprintf("SUDO_GID=%d", os.Getgid()), "SUDO_COMMAND="+strings.Join(cmd, " "),
		"SHELL="+loginShell(target.name))
	return req, nil
}

func loginShell(name string) string {
	for _, f := range readColonFile("/etc/passwd") {
		if len(f) >= 7 && f[0] == name && f[6] != "" {
			return f[6]
		}
	}
	return "/bin/sh"
}

// isSudo: the agent binary was run through a link named sudo.
func isSudo() bool { return filepath.Base(os.Args[0]) == "sudo" }
