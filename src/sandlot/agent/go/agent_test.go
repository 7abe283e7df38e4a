package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
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

func TestParseSudoArgs(t *testing.T) {
	env := []string{"PATH=/home/user/bin:/usr/bin", "TERM=xterm", "SECRET=1"}
	req, err := parseSudoArgs([]string{"-nE", "--", "apt-get", "-y", "install", "x"}, env)
	if err != nil || req.User != "root" || strings.Join(req.Argv, " ") != "apt-get -y install x" {
		t.Fatalf("-nE: %+v, %v", req, err)
	}
	if !containsEnv(req.Env, "SECRET=1") || !containsEnv(req.Env, "PATH=/home/user/bin:/usr/bin") {
		t.Fatalf("-E must keep the caller's environment: %v", req.Env)
	}
	req, err = parseSudoArgs([]string{"whoami"}, env)
	if err != nil || containsEnv(req.Env, "SECRET=1") || !containsEnv(req.Env, "PATH="+securePath) || !containsEnv(req.Env, "TERM=xterm") {
		t.Fatalf("without -E only a few variables pass, with sudo's secure path: %+v, %v", req, err)
	}
	req, err = parseSudoArgs([]string{"-u", "root", "-s", "echo", "hi"}, env)
	if err != nil || len(req.Argv) != 3 || req.Argv[1] != "-c" || req.Argv[2] != "echo hi" {
		t.Fatalf("-s: %+v, %v", req, err)
	}
	if _, err := parseSudoArgs([]string{"-g", "wheel", "id"}, env); err == nil {
		t.Fatal("an unsupported option must be refused, not ignored")
	}
}

func containsEnv(env []string, kv string) bool {
	for _, e := range env {
		if e == kv {
			return true
		}
	}
	return false
}

func TestSudoersMustBeRootsAndNotWritableByOthers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sudoers")
	if err := os.WriteFile(path, []byte("user\n# a comment\nbob\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if os.Getuid() == 0 {
		if got := sudoers(path); !got["user"] || !got["bob"] || len(got) != 2 {
			t.Fatalf("sudoers = %v", got)
		}
	}
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
	if got := sudoers(path); got != nil {
		t.Fatalf("a world-writable sudoers file must grant nothing, got %v", got)
	}
}

func TestReserveThreadsLeavesThemIdle(t *testing.T) {
	before := threadCount()
	want := before + 6
	if got := reserveThreads(want); got < want {
		t.Fatalf("reserveThreads(%d) left %d threads", want, got)
	}
	// The threads stay (idle in the runtime), and asking again makes none.
	time.Sleep(50 * time.Millisecond)
	if got := threadCount(); got < want {
		t.Fatalf("the reserved threads went away: %d of %d", got, want)
	}
	if got := reserveThreads(want); got < want {
		t.Fatalf("a second reserve lost threads: %d", got)
	}
}

func TestCreationsInNewDirectoriesAreReportedOnce(t *testing.T) {
	c := newCreations()
	// a directory there when the watch began: its events pass as they are
	if r, m := c.event("/w", "/w/old.txt", "write", false); !r || m {
		t.Fatalf("a write in a watched directory: report %v, missed %v", r, m)
	}
	c.adopt("/w/new")
	if !c.listed("/w/new/a.txt") {
		t.Fatal("a listed file must be reported created")
	}
	if r, _ := c.event("/w/new", "/w/new/a.txt", "create", false); r {
		t.Fatal("a listed file's inotify create must not be reported twice")
	}
	if r, m := c.event("/w/new", "/w/new/b.txt", "write", false); !r || !m {
		t.Fatalf("a file first seen written in a new directory: report %v, missed %v; want a create first", r, m)
	}
	if _, m := c.event("/w/new", "/w/new/b.txt", "write", false); m {
		t.Fatal("a second write must not report another create")
	}
	if r, m := c.event("/w/new", "/w/new/b.txt", "remove", false); !r || m {
		t.Fatalf("remove: report %v, missed %v", r, m)
	}
	if r, m := c.event("/w/new", "/w/new/b.txt", "create", false); !r || m {
		t.Fatalf("a file made again after its removal: report %v, missed %v", r, m)
	}
	if _, m := c.event("/w/new", "/w/new/c.txt", "rename", false); m {
		t.Fatal("a file moved in is reported as renamed, not created")
	}
}

func TestParseProcAddress(t *testing.T) {
	for in, want := range map[string]string{
		"0100007F:1F40":                         "127.0.0.1:8000",
		"00000000:0050":                         "0.0.0.0:80",
		"00000000000000000000000001000000:1F41": "::1:8001",
		"00000000000000000000000000000000:0016": ":::22",
	} {
		addr, port, ok := parseProcAddress(in)
		if got := fmt.Sprintf("%s:%d", addr, port); !ok || got != want {
			t.Errorf("parseProcAddress(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
	if _, _, ok := parseProcAddress("nonsense"); ok {
		t.Error("parseProcAddress accepted nonsense")
	}
}
