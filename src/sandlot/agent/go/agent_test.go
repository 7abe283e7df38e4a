package main

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestSafeNameRejectsEscapes(t *testing.T) {
	for _, bad := range []string{"../x", "/abs", "a/../../x", "a/b/../../../c"} {
		if _, err := safeName(bad); err == nil {
			t.Errorf("safeName(%q) accepted an escaping name", bad)
		}
	}
	for in, want := range map[string]string{"a/b": "a/b", "./a//b/": "a/b", "./": ""} {
		got, err := safeName(in)
		if err != nil || got != want {
			t.Errorf("safeName(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestLookupUser(t *testing.T) {
	passwd := [][]string{{"root", "x", "0", "0", "", "/root", "/bin/sh"}, {"user", "x", "1000", "1000", "", "/home/user", "/bin/sh"}}
	group := [][]string{{"users", "x", "100", "user,other"}, {"wheel", "x", "10", "root"}}
	u, err := lookupUser("user", passwd, group)
	if err != nil || u.uid != 1000 || u.home != "/home/user" || len(u.groups) != 2 || u.groups[1] != 100 {
		t.Fatalf("lookupUser(user) = %+v, %v", u, err)
	}
	if u, err := lookupUser("1000", passwd, group); err != nil || u.name != "user" {
		t.Fatalf("lookupUser(1000) = %+v, %v", u, err)
	}
	if u, err := lookupUser("4242", passwd, group); err != nil || u.uid != 4242 || u.gid != 4242 {
		t.Fatalf("a numeric uid not in passwd must still work: %+v, %v", u, err)
	}
	var ae *agentError
	if _, err := lookupUser("ghost", passwd, group); !errors.As(err, &ae) || ae.Code != ErrUserNotFound {
		t.Fatalf("lookupUser(ghost) = %v", err)
	}
	if u, err := lookupUser("root", nil, nil); err != nil || u.uid != 0 {
		t.Fatalf("root without /etc/passwd: %+v, %v", u, err)
	}
}

func TestFsErrMapsErrnoAndNamesThePath(t *testing.T) {
	dir := t.TempDir()
	_, err := os.Open(filepath.Join(dir, "missing"))
	var ae *agentError
	if e := fsErr(err, "/x/missing"); !errors.As(e, &ae) || ae.Code != ErrNotFound || ae.Path != "/x/missing" {
		t.Fatalf("fsErr(ENOENT) = %#v", e)
	}
	if e := fsErr(&os.PathError{Op: "write", Path: "f", Err: syscall.ENOSPC}, "/f"); !errors.As(e, &ae) || ae.Code != ErrNoSpace {
		t.Fatalf("fsErr(ENOSPC) = %#v", e)
	}
}

func TestLookPathAndEnv(t *testing.T) {
	u := &user{name: "user", home: "/home/user"}
	env := buildEnv(map[string]string{"A": "1"}, map[string]string{"A": "2", "PATH": "/nowhere:/bin:/usr/bin"}, u)
	want := map[string]bool{"A=2": true, "HOME=/home/user": true, "USER=user": true}
	for _, kv := range env {
		delete(want, kv)
	}
	if len(want) != 0 {
		t.Fatalf("buildEnv missed %v in %v", want, env)
	}
	if p, ok := lookPath("sh", env); !ok || filepath.Base(p) != "sh" {
		t.Fatalf("lookPath(sh) = %q, %v", p, ok)
	}
	if _, ok := lookPath("no-such-command-here", env); ok {
		t.Fatal("lookPath found a command that does not exist")
	}
}

func TestFrameRoundTrip(t *testing.T) {
	r, w, _ := os.Pipe()
	go func() {
		buf := []byte{0, 0, 0, 13, 0, 0, 0, 7, KindData, 0, 0, 0, 2, '{', '}', 'h', 'i'}
		_, _ = w.Write(buf)
		w.Close()
	}()
	f, err := readFrame(r)
	if err != nil || f.stream != 7 || f.kind != KindData || string(f.header) != "{}" || string(f.payload) != "hi" {
		t.Fatalf("readFrame = %+v, %v", f, err)
	}
}
