package main

// Users and groups from the sandbox's own /etc/passwd and /etc/group, parsed
// here because a static binary has no NSS, and the image may have no libc.

import (
	"bufio"
	"os"
	"strconv"
	"strings"
)

type user struct {
	name   string
	uid    uint32
	gid    uint32
	home   string
	groups []uint32
}

func readColonFile(path string) [][]string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out [][]string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		out = append(out, strings.Split(line, ":"))
	}
	return out
}

func parseID(s string) (uint32, bool) {
	n, err := strconv.ParseUint(s, 10, 32)
	return uint32(n), err == nil
}

// lookupUser resolves a name or numeric uid.
func lookupUser(spec string, passwd, group [][]string) (*user, error) {
	if spec == "" {
		spec = "root"
	}
	for _, f := range passwd {
		if len(f) < 7 {
			continue
		}
		uid, ok1 := parseID(f[2])
		gid, ok2 := parseID(f[3])
		if !ok1 || !ok2 {
			continue
		}
		if f[0] == spec || f[2] == spec {
			u := &user{name: f[0], uid: uid, gid: gid, home: f[5]}
			u.groups = supplementaryGroups(u.name, gid, group)
			return u, nil
		}
	}
	if spec == "root" {
		return &user{name: "root", uid: 0, gid: 0, home: "/root"}, nil
	}
	if uid, ok := parseID(spec); ok {
		return &user{name: spec, uid: uid, gid: uid, home: "/"}, nil
	}
	return nil, errCode(ErrUserNotFound, "", "user not found in the sandbox's /etc/passwd: %s", spec)
}

func supplementaryGroups(name string, primary uint32, group [][]string) []uint32 {
	gids := []uint32{primary}
	for _, f := range group {
		if len(f) < 4 {
			continue
		}
		for _, m := range strings.Split(f[3], ",") {
			if m == name {
				if gid, ok := parseID(f[2]); ok && gid != primary {
					gids = append(gids, gid)
				}
			}
		}
	}
	return gids
}

func resolveUser(spec string) (*user, error) {
	return lookupUser(spec, readColonFile("/etc/passwd"), readColonFile("/etc/group"))
}

// names maps ids to names for file listings.
type names struct{ users, groups map[uint32]string }

func loadNames() names {
	n := names{users: map[uint32]string{}, groups: map[uint32]string{}}
	for _, f := range readColonFile("/etc/passwd") {
		if len(f) >= 3 {
			if id, ok := parseID(f[2]); ok {
				if _, seen := n.users[id]; !seen {
					n.users[id] = f[0]
				}
			}
		}
	}
	for _, f := range readColonFile("/etc/group") {
		if len(f) >= 3 {
			if id, ok := parseID(f[2]); ok {
				if _, seen := n.groups[id]; !seen {
					n.groups[id] = f[0]
				}
			}
		}
	}
	return n
}
