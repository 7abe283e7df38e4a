package main

// E2B's file metadata: user key/value pairs in the file's `user.e2b.*` extended
// attributes, where envd keeps them too. Where the sandbox's filesystem holds no
// xattrs (gVisor's 9p gofer: the root filesystem and volumes) an entry says so
// (MetadataUnsupported) and the node keeps them on the host's copy of the file.

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

const metaPrefix = "user.e2b."

// v9fsMagic: gVisor's gofer filesystem, whose listxattr answers an empty list and whose
// setxattr fails, whatever the file holds on the host.
const v9fsMagic = 0x01021997

func xattrUnsupported(err error) bool {
	return err == syscall.ENOTSUP || err == syscall.EOPNOTSUPP
}

// keepsXattrs: whether the filesystem path is on holds extended attributes in this sandbox.
func keepsXattrs(path string) bool {
	var st syscall.Statfs_t
	return syscall.Statfs(path, &st) != nil || st.Type != v9fsMagic
}

// metaNames lists the file's user.e2b.* attribute names.
func metaNames(path string) ([]string, error) {
	size, err := syscall.Listxattr(path, nil)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, size+64)
	n, err := syscall.Listxattr(path, buf)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, name := range bytes.Split(buf[:n], []byte{0}) {
		if strings.HasPrefix(string(name), metaPrefix) {
			out = append(out, string(name))
		}
	}
	return out, nil
}

// readMeta fills e.Metadata (nil when the file has none), or marks it unsupported.
func readMeta(e *FileEntry) {
	if e.Type != "file" && e.Type != "dir" {
		return // symlinks and special files hold no user xattrs
	}
	if !keepsXattrs(e.Path) {
		e.MetadataUnsupported = true
		return
	}
	names, err := metaNames(e.Path)
	if err != nil {
		e.MetadataUnsupported = xattrUnsupported(err)
		return
	}
	for _, name := range names {
		buf := make([]byte, 4096)
		n, err := syscall.Getxattr(e.Path, name, buf)
		if err != nil {
			continue // removed meanwhile
		}
		if e.Metadata == nil {
			e.Metadata = map[string]string{}
		}
		e.Metadata[strings.TrimPrefix(name, metaPrefix)] = string(buf[:n])
	}
}

// writeMeta replaces the file's metadata with md (empty: none left). It returns
// false when the filesystem holds no xattrs here.
func writeMeta(path string, md map[string]string) (bool, error) {
	if !keepsXattrs(path) {
		return false, nil
	}
	names, err := metaNames(path)
	if err != nil {
		if xattrUnsupported(err) {
			return false, nil
		}
		return true, fsErr(err, path)
	}
	for _, name := range names {
		if _, keep := md[strings.TrimPrefix(name, metaPrefix)]; !keep {
			if err := syscall.Removexattr(path, name); err != nil && err != syscall.ENODATA {
				return true, fsErr(err, path)
			}
		}
	}
	for k, v := range md {
		if err := syscall.Setxattr(path, metaPrefix+k, []byte(v), 0); err != nil {
			if xattrUnsupported(err) {
				return false, nil
			}
			return true, fsErr(err, path)
		}
	}
	return true, nil
}

// linkInfo describes what a symlink entry points to: its resolved path and type.
func linkInfo(e *FileEntry) {
	if e.Type != "symlink" {
		return
	}
	resolved, err := filepath.EvalSymlinks(e.Path)
	if err != nil {
		return // dangling (or a loop): no target to describe
	}
	st, err := os.Stat(resolved)
	if err != nil {
		return
	}
	kind := "other"
	if st.Mode().IsRegular() {
		kind = "file"
	} else if st.IsDir() {
		kind = "dir"
	}
	e.LinkPath, e.LinkType = &resolved, &kind
}
