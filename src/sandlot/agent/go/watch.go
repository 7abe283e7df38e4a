package main

// Directory watches with inotify, recursive on request (new subdirectories too).

import (
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"syscall"
)

const watchMask = syscall.IN_CREATE | syscall.IN_MODIFY | syscall.IN_CLOSE_WRITE | syscall.IN_DELETE |
	syscall.IN_DELETE_SELF | syscall.IN_MOVED_FROM | syscall.IN_MOVED_TO | syscall.IN_ATTRIB

func handleWatch(a *agent, s *stream, raw json.RawMessage, _ []byte) (interface{}, error) {
	var params WatchParams
	if err := decode(raw, &params); err != nil {
		return nil, err
	}
	root, err := a.abs(params.Path)
	if err != nil {
		return nil, err
	}
	st, err := os.Stat(root)
	if err != nil {
		return nil, fsErr(err, root)
	}
	if !st.IsDir() {
		return nil, errCode(ErrNotADirectory, root, "not a directory: %s", root)
	}
	fd, err := syscall.InotifyInit1(syscall.IN_NONBLOCK | syscall.IN_CLOEXEC)
	if err != nil {
		return nil, errCode(ErrInternal, root, "inotify: %v", err)
	}
	f := os.NewFile(uintptr(fd), "inotify")
	defer f.Close()
	dirs := map[int32]string{}
	add := func(dir string) {
		if wd, err := syscall.InotifyAddWatch(fd, dir, watchMask); err == nil {
			dirs[int32(wd)] = dir
		}
	}
	send := func(op, path string) error {
		ev := WatchEvent{Type: "fs", Op: op, Path: path}
		if params.Entries && op != "remove" {
			if e, err := statEntry(path, true); err == nil {
				ev.Entry = &e
			}
		}
		return s.event(ev)
	}
	news := newCreations()
	// adopt watches a directory that appeared under a recursive watch, and its subdirectories;
	// what they already hold was created before the watch could see it: report it as created.
	adopt := func(dir string) error {
		return filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
			if err != nil {
				return nil
			}
			if info.IsDir() {
				add(p)
				news.adopt(p)
			}
			if p != dir && news.listed(p) {
				return send("create", p)
			}
			return nil
		})
	}
	add(root)
	if params.Recursive {
		_ = filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
			if err == nil && info.IsDir() && p != root {
				add(p)
			}
			return nil
		})
	}
	_ = s.event(WatchReady{Type: "ready"})
	go func() {
		<-s.cancel
		f.Close() // unblocks the read below
	}()
	buf := make([]byte, 64*1024)
	for {
		n, err := f.Read(buf)
		if err != nil {
			return struct{}{}, nil
		}
		for off := 0; off+syscall.SizeofInotifyEvent <= n; {
			wd := int32(binary.LittleEndian.Uint32(buf[off:]))
			mask := binary.LittleEndian.Uint32(buf[off+4:])
			nameLen := int(binary.LittleEndian.Uint32(buf[off+12:]))
			nameBytes := buf[off+syscall.SizeofInotifyEvent : off+syscall.SizeofInotifyEvent+nameLen]
			off += syscall.SizeofInotifyEvent + nameLen
			name := string(trimNul(nameBytes))
			dir, ok := dirs[wd]
			if !ok {
				continue
			}
			path := dir
			if name != "" {
				path = filepath.Join(dir, name)
			}
			op, newDir := "", false
			switch {
			case mask&syscall.IN_CREATE != 0:
				op, newDir = "create", mask&syscall.IN_ISDIR != 0
			case mask&(syscall.IN_MODIFY|syscall.IN_CLOSE_WRITE) != 0:
				op = "write"
			case mask&(syscall.IN_DELETE|syscall.IN_DELETE_SELF) != 0:
				op = "remove"
			case mask&syscall.IN_MOVED_TO != 0:
				op, newDir = "rename", mask&syscall.IN_ISDIR != 0
			case mask&syscall.IN_MOVED_FROM != 0:
				op = "rename"
			case mask&syscall.IN_ATTRIB != 0:
				op = "chmod"
			}
			if op == "" {
				continue
			}
			report, missed := news.event(dir, path, op, mask&syscall.IN_MOVED_FROM != 0)
			if !report {
				continue
			}
			if missed {
				if err := send("create", path); err != nil {
					return struct{}{}, nil
				}
			}
			if err := send(op, path); err != nil {
				return struct{}{}, nil
			}
			if newDir && params.Recursive {
				if err := adopt(path); err != nil {
					return struct{}{}, nil
				}
			}
		}
	}
}

// creations keeps a recursive watch's create events whole in directories that appeared after
// the watch began, where every entry is new. Under gVisor a file made just as its directory
// appears can be missed both by the listing that adopts the directory and by inotify's create
// event, and show up first as a write: it is reported as created then. A file both listed and
// seen by inotify is reported created once.
type creations struct {
	fresh map[string]bool // directories adopted after the watch began
	seen  map[string]bool // paths in them already reported as existing
}

func newCreations() *creations {
	return &creations{fresh: map[string]bool{}, seen: map[string]bool{}}
}

func (c *creations) adopt(dir string) { c.fresh[dir] = true }

// listed says whether a path found by adopt's listing is still to be reported as created.
func (c *creations) listed(path string) bool {
	if c.seen[path] {
		return false
	}
	c.seen[path] = true
	return true
}

// event takes an inotify event for path in dir; report says whether to send it, missed whether
// a create must be sent before it.
func (c *creations) event(dir, path, op string, movedFrom bool) (report, missed bool) {
	if !c.fresh[dir] || path == dir {
		return true, false
	}
	if op == "remove" || movedFrom {
		delete(c.seen, path)
		delete(c.fresh, path)
		return true, false
	}
	was := c.seen[path]
	c.seen[path] = true
	switch op {
	case "create":
		return !was, false
	case "write", "chmod":
		return true, !was
	}
	return true, false
}

func trimNul(b []byte) []byte {
	for i, c := range b {
		if c == 0 {
			return b[:i]
		}
	}
	return b
}
