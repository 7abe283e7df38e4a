package main

// port.connect: a TCP connection to a port inside the sandbox, relayed over
// the node link as DATA frames. It needs no network between host and sandbox,
// so exposed ports work in every network mode, "none" included.
//
// Flow control, both ways, so that neither a server that stops reading nor a
// client that reads slowly can stall the agent's link or fill the node's
// memory: each side acknowledges the DATA it has consumed with an EVENT
// {"type": "ack", "n": bytes}, and each sender keeps at most PortWindow bytes
// (and PortWindowFrames frames) unacknowledged.

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// portAckFrames: the agent acknowledges at least every this many DATA frames
// (the node keeps at most 32 unacknowledged).
const portAckFrames = 8

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
			s.wake()
		case <-s.done:
		}
	}()
	var in int64
	go func() { // node -> sandbox
		// Acknowledgements are batched: a write to the node's socket per small
		// request was a large part of the agent's cost per proxied request.
		var pendingN, pendingFrames int64
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
			pendingN += int64(len(b))
			pendingFrames++
			if pendingN >= PortWindow/4 || pendingFrames >= portAckFrames {
				_ = s.event(PortAck{Type: "ack", N: pendingN, Frames: pendingFrames})
				pendingN, pendingFrames = 0, 0
			}
		}
	}()
	var out int64
	buf := make([]byte, 64*1024)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if !s.waitCredit() || s.data(nil, buf[:n]) != nil {
				break
			}
			s.spent(int64(n))
			out += int64(n)
		}
		if err != nil {
			break
		}
	}
	return PortClosed{BytesIn: atomic.LoadInt64(&in), BytesOut: out}, nil
}

func (s *stream) creditCond() *sync.Cond {
	if s.credit == nil {
		s.credit = sync.NewCond(&s.creditMu)
	}
	return s.credit
}

// waitCredit blocks while PortWindow bytes are unacknowledged; false once the stream is over.
func (s *stream) waitCredit() bool { return s.waitCreditUpTo(PortWindow) }

// waitCreditUpTo blocks while `window` bytes are unacknowledged; false once the stream is over.
func (s *stream) waitCreditUpTo(window int64) bool {
	s.creditMu.Lock()
	defer s.creditMu.Unlock()
	cond := s.creditCond()
	for s.unacked >= window {
		if s.cancelled() || s.isDone() {
			return false
		}
		cond.Wait()
	}
	return !s.cancelled()
}

func (s *stream) spent(n int64) {
	s.creditMu.Lock()
	s.unacked += n
	s.creditMu.Unlock()
}

func (s *stream) acked(n int64) {
	s.creditMu.Lock()
	s.unacked -= n
	s.creditCond().Broadcast()
	s.creditMu.Unlock()
}

// wake lets a waitCredit see a cancel.
func (s *stream) wake() {
	s.creditMu.Lock()
	s.creditCond().Broadcast()
	s.creditMu.Unlock()
}

func (s *stream) isDone() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}
