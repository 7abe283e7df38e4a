package main

// Directories in and out as tar streams, never whole in memory.

import (
	"archive/tar"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// chunkWriter turns a byte stream into DATA frames of at most Chunk bytes.
type chunkWriter struct {
	s    *stream
	buf  []byte
	sent int64
}

func (w *chunkWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		room := Chunk - len(w.buf)
		if room > len(p) {
			room = len(p)
		}
		w.buf = append(w.buf, p[:room]...)
		p = p[room:]
		if len(w.buf) == Chunk {
			if err := w.flush(); err != nil {
				return 0, err
			}
		}
	}
	return n, nil
}

func (w *chunkWriter) flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	if w.s.cancelled() {
		return errCancelled
	}
	err := w.s.data(nil, w.buf)
	w.sent += int64(len(w.buf))
	w.buf = w.buf[:0]
	return err
}

func handleTarRead(a *agent, s *stream, raw json.RawMessage, _ []byte) (interface{}, error) {
	var params PathParams
	if err := decode(raw, &params); err != nil {
		return nil, err
	}
	root, err := a.abs(params.Path)
	if err != nil {
		return nil, err
	}
	rootInfo, err := os.Stat(root)
	if err != nil {
		return nil, fsErr(err, root)
	}
	cw := &chunkWriter{s: s, buf: make([]byte, 0, Chunk)}
	tw := tar.NewWriter(cw)
	var entries int64
	add := func(path, name string, info os.FileInfo) error {
		link := ""
		if info.Mode()&os.ModeSymlink != 0 {
			link, _ = os.Readlink(path)
		}
		hdr, err := tar.FileInfoHeader(info, link)
		if err != nil {
			return nil // sockets and the like: skipped
		}
		hdr.Name = name
		if info.IsDir() {
			hdr.Name += "/"
		}
		hdr.Uname, hdr.Gname = "", ""
		hdr.Format = tar.FormatPAX
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		entries++
		if info.Mode().IsRegular() {
			f, err := os.Open(path)
			if err != nil {
				return fsErr(err, path)
			}
			defer f.Close()
			if _, err := io.CopyN(tw, f, hdr.Size); err != nil {
				return fsErr(err, path)
			}
		}
		return nil
	}
	if !rootInfo.IsDir() {
		err = add(root, filepath.Base(root), rootInfo)
	} else {
		err = filepath.Walk(root, func(path string, info os.FileInfo, err error) error {
			if err != nil {
				return nil // vanished or unreadable: skip it
			}
			if path == root {
				return nil
			}
			rel, _ := filepath.Rel(root, path)
			return add(path, rel, info)
		})
	}
	if err != nil {
		if err == errCancelled {
			return TarResult{Entries: entries, Bytes: cw.sent}, nil
		}
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := cw.flush(); err != nil && err != errCancelled {
		return nil, err
	}
	return TarResult{Entries: entries, Bytes: cw.sent}, nil
}

// safeName checks a tar entry's name: relative, and no ".." anywhere.
func safeName(name string) (string, error) {
	clean := strings.TrimPrefix(name, "./")
	if clean == "" || clean == "." {
		return "", nil
	}
	if strings.HasPrefix(clean, "/") {
		return "", errInvalid("tar entry has an absolute path: %s", name)
	}
	for _, part := range strings.Split(clean, "/") {
		if part == ".." {
			return "", errInvalid("tar entry escapes the target directory: %s", name)
		}
	}
	return filepath.Clean(clean), nil
}

// ensureParents creates the parents of rel under root, refusing to pass through symlinks.
func ensureParents(root, rel string) error {
	dir := root
	parts := strings.Split(filepath.Dir(rel), "/")
	for _, part := range parts {
		if part == "." || part == "" {
			continue
		}
		dir = filepath.Join(dir, part)
		st, err := os.Lstat(dir)
		if err == nil {
			if st.Mode()&os.ModeSymlink != 0 {
				return errInvalid("tar entry %s passes through a symlink", rel)
			}
			if !st.IsDir() {
				return errCode(ErrNotADirectory, dir, "not a directory: %s", dir)
			}
			continue
		}
		if err := os.Mkdir(dir, 0o755); err != nil && !os.IsExist(err) {
			return fsErr(err, dir)
		}
	}
	return nil
}

func handleTarWrite(a *agent, s *stream, raw json.RawMessage, _ []byte) (interface{}, error) {
	var params TarWriteParams
	if err := decode(raw, &params); err != nil {
		return nil, err
	}
	root, err := a.abs(params.Path)
	if err != nil {
		return nil, err
	}
	u, err := optionalUser(params.User)
	if err != nil {
		return nil, err
	}
	if err := mkdirAllAs(root, 0o755, u); err != nil {
		return nil, err
	}
	pr, pw := io.Pipe()
	go func() {
		for {
			data, err := s.input()
			if err == io.EOF {
				pw.Close()
				return
			}
			if err != nil {
				pw.CloseWithError(err)
				return
			}
			_, err = pw.Write(data)
			s.recycle() // the pipe's reader has taken it all (or failed)
			if err != nil {
				return
			}
		}
	}()
	defer pr.Close()
	tr := tar.NewReader(pr)
	var res TarResult
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, errInvalid("bad tar stream: %v", err)
		}
		rel, err := safeName(hdr.Name)
		if err != nil {
			return nil, err
		}
		if rel == "" {
			continue
		}
		if err := ensureParents(root, rel); err != nil {
			return nil, err
		}
		target := filepath.Join(root, rel)
		mode := os.FileMode(hdr.Mode) & os.ModePerm
		switch hdr.Typeflag {
		case tar.TypeDir:
			if st, err := os.Lstat(target); err == nil && !st.IsDir() {
				if err := os.Remove(target); err != nil {
					return nil, fsErr(err, target)
				}
			}
			if err := os.Mkdir(target, mode); err != nil && !os.IsExist(err) {
				return nil, fsErr(err, target)
			}
			_ = os.Chmod(target, mode)
		case tar.TypeReg, tar.TypeRegA:
			if st, err := os.Lstat(target); err == nil && !st.Mode().IsRegular() {
				if err := os.RemoveAll(target); err != nil {
					return nil, fsErr(err, target)
				}
			}
			f, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|syscall.O_NOFOLLOW, mode)
			if err != nil {
				return nil, fsErr(err, target)
			}
			n, err := io.Copy(f, tr)
			f.Close()
			if err != nil {
				return nil, fsErr(err, target)
			}
			_ = os.Chmod(target, mode)
			res.Bytes += n
		case tar.TypeSymlink:
			_ = os.RemoveAll(target)
			if err := os.Symlink(hdr.Linkname, target); err != nil {
				return nil, fsErr(err, target)
			}
		case tar.TypeLink:
			linkRel, err := safeName(hdr.Linkname)
			if err != nil || linkRel == "" {
				return nil, errInvalid("tar hard link escapes the target directory: %s", hdr.Linkname)
			}
			_ = os.RemoveAll(target)
			if err := os.Link(filepath.Join(root, linkRel), target); err != nil {
				return nil, fsErr(err, target)
			}
		default:
			continue // devices, fifos: skipped
		}
		uid, gid := hdr.Uid, hdr.Gid
		if u != nil {
			uid, gid = int(u.uid), int(u.gid)
		}
		_ = os.Lchown(target, uid, gid)
		if hdr.Typeflag != tar.TypeSymlink {
			_ = os.Chtimes(target, hdr.ModTime, hdr.ModTime)
		}
		res.Entries++
	}
	return res, nil
}
