package main

// The sandbox's listening TCP sockets and the processes that hold them, read from /proc (the
// sandbox's own: gVisor's sentry serves it). The node asks before a memory save: this gVisor
// release cannot save a listening socket that an epoll instance watches, and a refused save
// ends the sandbox.

import (
	"bufio"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
)

func handleListeners(_ *agent, _ *stream, _ json.RawMessage, _ []byte) (interface{}, error) {
	listening := map[string]Listener{} // socket inode -> its address and port
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		if err := readListening(table, listening); err != nil && !os.IsNotExist(err) {
			return nil, errCode(ErrInternal, table, "reading %s: %v", table, err)
		}
	}
	out := []Listener{}
	if len(listening) == 0 {
		return ListenersResult{Listeners: out}, nil
	}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return nil, errCode(ErrInternal, "/proc", "reading /proc: %v", err)
	}
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		if err != nil {
			continue // exited meanwhile
		}
		epoll, held := false, []Listener{}
		for _, fd := range fds {
			link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
			if err != nil {
				continue
			}
			if link == "anon_inode:[eventpoll]" {
				epoll = true
			} else if strings.HasPrefix(link, "socket:[") && strings.HasSuffix(link, "]") {
				if l, ok := listening[link[len("socket:["):len(link)-1]]; ok {
					held = append(held, l)
				}
			}
		}
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		for _, l := range held {
			l.Pid, l.Command, l.Epoll = int64(pid), strings.TrimSpace(string(comm)), epoll
			out = append(out, l)
		}
	}
	return ListenersResult{Listeners: out}, nil
}

// readListening adds the sockets in LISTEN state of a /proc/net/tcp{,6} table, by inode.
func readListening(table string, into map[string]Listener) error {
	f, err := os.Open(table)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan() // the header
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 || fields[3] != "0A" { // 0A: TCP_LISTEN
			continue
		}
		address, port, ok := parseProcAddress(fields[1])
		if ok {
			into[fields[9]] = Listener{Address: address, Port: port}
		}
	}
	return sc.Err()
}

// parseProcAddress reads "0100007F:1F40" (IPv4) or its 32-digit IPv6 form: the address is in
// the kernel's byte order, 32 bits at a time.
func parseProcAddress(s string) (string, int64, bool) {
	host, portHex, ok := strings.Cut(s, ":")
	if !ok {
		return "", 0, false
	}
	port, err := strconv.ParseInt(portHex, 16, 32)
	raw, err2 := hex.DecodeString(host)
	if err != nil || err2 != nil || (len(raw) != 4 && len(raw) != 16) {
		return "", 0, false
	}
	for i := 0; i < len(raw); i += 4 { // each 32-bit word is little-endian
		raw[i], raw[i+1], raw[i+2], raw[i+3] = raw[i+3], raw[i+2], raw[i+1], raw[i]
	}
	return net.IP(raw).String(), port, true
}
