package main

// The node link: framing, one writer lock, streams routed by id.
//
// Invariant: `streams` holds every stream whose handler has not returned;
// a stream's `in` channel is only written by the read loop, and only while
// the handler is alive (`done` open), so the read loop never blocks on a
// stream nobody reads.

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
)

type frame struct {
	stream  uint32
	kind    byte
	header  json.RawMessage
	payload []byte
	// buf: the pooled body the frame lies in (large frames only), nil otherwise; see recycle
	buf *[]byte
}

// Large frame bodies (file data streaming in) are read into buffers reused from
// this pool once their consumer is done with them (stream.recycle): a fresh
// heap buffer per frame was 100 MB of garbage per 100 MB uploaded, and under
// gVisor every page of it newly touched is a fault taken by the Sentry.
const pooledMin = 64 << 10

// uploadDepth: how many frames of an upload (FileChunk each) wait for the disk at most, so an
// upload holds the agent (and so the sandbox's memory limit) to that much.
const uploadDepth = 8

var frameBufs sync.Pool // of *[]byte

type conn struct {
	c       io.ReadWriteCloser
	wmu     sync.Mutex
	smu     sync.Mutex
	streams map[uint32]*stream
}

type stream struct {
	id       uint32
	conn     *conn
	in       chan frame
	cancel   chan struct{}
	done     chan struct{}
	cancelMu sync.Once
	ended    bool
	endMu    sync.Mutex
	// credit: DATA this side sent that the node has not acknowledged yet
	// (port streams only; see ports.go). Guarded by creditMu.
	creditMu sync.Mutex
	credit   *sync.Cond
	unacked  int64
	// held: the pooled buffer of the last frame input() returned (only the handler touches it)
	held *[]byte
}

func newConn(c io.ReadWriteCloser) *conn {
	return &conn{c: c, streams: map[uint32]*stream{}}
}

func (c *conn) send(id uint32, kind byte, header interface{}, payload []byte) error {
	var h []byte
	if header == nil {
		h = []byte("{}")
	} else {
		var err error
		if h, err = json.Marshal(header); err != nil {
			return err
		}
	}
	length := 9 + len(h) + len(payload)
	if length > MaxFrame {
		return fmt.Errorf("frame of %d bytes exceeds the limit", length)
	}
	head := make([]byte, 13, 13+len(h))
	binary.BigEndian.PutUint32(head[0:], uint32(length))
	binary.BigEndian.PutUint32(head[4:], id)
	head[8] = kind
	binary.BigEndian.PutUint32(head[9:], uint32(len(h)))
	head = append(head, h...)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if len(payload) < pooledMin {
		_, err := c.c.Write(append(head, payload...))
		return err
	}
	// One writev of head and payload: no copy of a large payload into a fresh frame.
	bufs := net.Buffers{head, payload}
	_, err := bufs.WriteTo(c.c)
	return err
}

func readFrame(r io.Reader) (frame, error) {
	var prefix [13]byte
	if _, err := io.ReadFull(r, prefix[:4]); err != nil {
		return frame{}, err
	}
	length := binary.BigEndian.Uint32(prefix[:4])
	if length < 9 || length > MaxFrame {
		return frame{}, fmt.Errorf("bad frame length %d", length)
	}
	var body []byte
	var buf *[]byte
	if length >= pooledMin {
		// A pooled buffer if one is large enough, else one of the frame's size (the pool only
		// ever holds what a consumer recycled: a stream that keeps its payloads costs no more).
		if b, _ := frameBufs.Get().(*[]byte); b != nil && cap(*b) >= int(length) {
			buf = b
		} else {
			nb := make([]byte, length)
			buf = &nb
		}
		body = (*buf)[:length]
	} else {
		body = make([]byte, length)
	}
	if _, err := io.ReadFull(r, body); err != nil {
		return frame{}, err
	}
	hlen := binary.BigEndian.Uint32(body[5:9])
	if hlen > length-9 {
		return frame{}, fmt.Errorf("bad header length %d", hlen)
	}
	return frame{
		stream:  binary.BigEndian.Uint32(body[0:4]),
		kind:    body[4],
		header:  json.RawMessage(body[9 : 9+hlen]),
		payload: body[9+hlen:],
		buf:     buf,
	}, nil
}

// serve reads frames until the connection drops, then cancels every stream.
func (c *conn) serve(a *agent) {
	r := bufio.NewReaderSize(c.c, 1<<20)
	for {
		f, err := readFrame(r)
		if err != nil {
			break
		}
		switch f.kind {
		case KindOpen:
			var open struct {
				Method string          `json:"method"`
				Params json.RawMessage `json:"params"`
			}
			if err := json.Unmarshal(f.header, &open); err != nil {
				_ = c.send(f.stream, KindEnd, endErr(errInvalid("bad OPEN header: %v", err)), nil)
				continue
			}
			depth := 64
			if open.Method == MethodFsWrite || open.Method == MethodFsTarWrite {
				depth = uploadDepth
			}
			s := &stream{id: f.stream, conn: c, in: make(chan frame, depth), cancel: make(chan struct{}), done: make(chan struct{})}
			c.smu.Lock()
			c.streams[f.stream] = s
			c.smu.Unlock()
			go a.handle(s, open.Method, open.Params, f.payload)
		case KindData, KindEnd:
			if s := c.get(f.stream); s != nil {
				select {
				case s.in <- f:
				case <-s.done:
				}
			}
		case KindCancel:
			if s := c.get(f.stream); s != nil {
				s.cancelNow()
			}
		case KindEvent:
			var ack PortAck
			if s := c.get(f.stream); s != nil && json.Unmarshal(f.header, &ack) == nil && ack.Type == "ack" {
				s.acked(ack.N)
			}
		}
	}
	c.c.Close()
	c.smu.Lock()
	for _, s := range c.streams {
		s.cancelNow()
	}
	c.smu.Unlock()
}

func (c *conn) get(id uint32) *stream {
	c.smu.Lock()
	defer c.smu.Unlock()
	return c.streams[id]
}

func (s *stream) cancelNow() { s.cancelMu.Do(func() { close(s.cancel) }) }

func (s *stream) cancelled() bool {
	select {
	case <-s.cancel:
		return true
	default:
		return false
	}
}

func (s *stream) data(header interface{}, payload []byte) error {
	return s.conn.send(s.id, KindData, header, payload)
}

func (s *stream) event(v interface{}) error { return s.conn.send(s.id, KindEvent, v, nil) }

type endHeader struct {
	Ok     bool        `json:"ok"`
	Result interface{} `json:"result,omitempty"`
	Error  *ErrorBody  `json:"error,omitempty"`
}

func endErr(err error) endHeader {
	var ae *agentError
	if !errors.As(err, &ae) {
		ae = &agentError{Code: ErrInternal, Message: err.Error()}
	}
	body := &ErrorBody{Code: ae.Code, Message: ae.Message}
	if ae.Path != "" {
		p := ae.Path
		body.Path = &p
	}
	return endHeader{Ok: false, Error: body}
}

// finish sends the one END frame of the stream and forgets it.
func (s *stream) finish(result interface{}, err error) {
	s.endMu.Lock()
	if s.ended {
		s.endMu.Unlock()
		return
	}
	s.ended = true
	s.endMu.Unlock()
	if err != nil {
		_ = s.conn.send(s.id, KindEnd, endErr(err), nil)
	} else {
		if result == nil {
			result = struct{}{}
		}
		_ = s.conn.send(s.id, KindEnd, endHeader{Ok: true, Result: result}, nil)
	}
	s.conn.smu.Lock()
	delete(s.conn.streams, s.id)
	s.conn.smu.Unlock()
	close(s.done)
}

// input returns the next DATA payload; io.EOF after END, errCancelled on cancel.
var errCancelled = errors.New("stream cancelled")

// recycle hands the buffer of the payload input() last returned back for reuse: call it
// once that payload is no longer used (written out), never while anything still holds it.
func (s *stream) recycle() {
	if s.held != nil {
		frameBufs.Put(s.held)
		s.held = nil
	}
}

func (s *stream) input() ([]byte, error) {
	s.held = nil
	select {
	case f := <-s.in:
		if f.kind == KindEnd {
			return nil, io.EOF
		}
		s.held = f.buf
		return f.payload, nil
	case <-s.cancel:
		return nil, errCancelled
	case <-s.done:
		return nil, errCancelled
	}
}
