package main

// port.connect: a TCP connection to a port inside the sandbox, relayed over
// the node link as DATA frames. It needs no network between host and sandbox,
// so exposed ports work in every network mode, "none" included.
//
// Flow control is TCP's on the sandbox side only: a server that stops reading
// while the node keeps sending stalls this stream's input (and, once its
// 64-frame queue is full, the link's read loop) until it reads again.

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"time"
)

func dialPort(port int64) (net.Conn, error) {
	var last error
	for _, host := range []string{"127.0.0.1", "::1"} {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(host, fmt.Sprint(port)), 5*time.Second)
		if err == nil {
			return c, nil
		}
		last = err
	}
	return nil, last
}

func handlePortConnect(a *agent, s *stream, raw json.RawMessage, _ []byte) (interface{}, error) {
	var params PortConnectParams
	if err := decode(raw, &params); err != nil {
		return nil, err
	}
	if params.Port < 1 || params.Port > 65535 {
		return nil, errInvalid("port must be between 1 and 65535, got %d", params.Port)
	}
	c, err := dialPort(params.Port)
	if err != nil {
		return nil, errCode(ErrPortNotListening, "", "nothing is listening on port %d inside the sandbox (%v)", params.Port, err)
	}
	defer c.Close()
	if err := s.event(PortConnected{Type: "connected"}); err != nil {
		return nil, err
	}
	go func() {
		select {
		case <-s.cancel:
			c.Close()
		case <-s.done:
		}
	}()
	var in int64
	go func() { // node -> sandbox
		for {
			b, err := s.input()
			if err == io.EOF {
				if tc, ok := c.(*net.TCPConn); ok {
					_ = tc.CloseWrite()
				}
				return
			}
			if err != nil {
				c.Close()
				return
			}
			if _, err := c.Write(b); err != nil {
				c.Close()
				return
			}
			atomic.AddInt64(&in, int64(len(b)))
		}
	}()
	var out int64
	buf := make([]byte, 64*1024)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if s.data(nil, buf[:n]) != nil {
				break
			}
			out += int64(n)
		}
		if err != nil {
			break
		}
	}
	return PortClosed{BytesIn: atomic.LoadInt64(&in), BytesOut: out}, nil
}
