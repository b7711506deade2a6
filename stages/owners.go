package stages

import (
	"fmt"
	"strconv"
	"strings"

	"gitlab.com/stagehand/stagehand/config"
)

// Owners are the users and groups of an image, from its /etc/passwd and
// /etc/group: git files and imports are given names as werf 1.1 gave
// them, looked up in the image they go into, without running it.
type Owners struct {
	users  map[string]owner
	groups map[string]int
}

type owner struct{ uid, gid int }

// ParseOwners reads an image's /etc/passwd and /etc/group (either may be
// empty: an image without them knows only numeric ids and root).
func ParseOwners(passwd, group []byte) Owners {
	o := Owners{users: map[string]owner{"root": {0, 0}}, groups: map[string]int{"root": 0}}
	for _, line := range strings.Split(string(passwd), "\n") {
		f := strings.Split(line, ":")
		if len(f) < 4 || strings.HasPrefix(f[0], "#") {
			continue
		}
		uid, err1 := strconv.Atoi(f[2])
		gid, err2 := strconv.Atoi(f[3])
		if err1 == nil && err2 == nil {
			o.users[f[0]] = owner{uid, gid}
		}
	}
	for _, line := range strings.Split(string(group), "\n") {
		f := strings.Split(line, ":")
		if len(f) < 3 || strings.HasPrefix(f[0], "#") {
			continue
		}
		if gid, err := strconv.Atoi(f[2]); err == nil {
			o.groups[f[0]] = gid
		}
	}
	return o
}

// IDs resolves an owner and group (names or numeric ids; either may be
// empty) to ids. As werf did: no owner is root; no group is the owner's
// primary group (0 for a numeric owner the image does not name).
func (o Owners) IDs(user, group string) (uid, gid int, err error) {
	if user != "" {
		if n, err := strconv.Atoi(user); err == nil && n >= 0 {
			uid = n
			for _, u := range o.users {
				if u.uid == n {
					gid = u.gid
					break
				}
			}
		} else if u, ok := o.users[user]; ok {
			uid, gid = u.uid, u.gid
		} else {
			return 0, 0, fmt.Errorf("owner %q is not a user of the image (its /etc/passwd): create it in an earlier stage, or give a numeric id", user)
		}
	}
	if group != "" {
		if n, err := strconv.Atoi(group); err == nil && n >= 0 {
			gid = n
		} else if g, ok := o.groups[group]; ok {
			gid = g
		} else {
			return 0, 0, fmt.Errorf("group %q is not a group of the image (its /etc/group): create it in an earlier stage, or give a numeric id", group)
		}
	}
	return uid, gid, nil
}

// needsLookup tells whether an owner or group is a name other than root.
func needsLookup(user, group string) bool {
	for _, v := range []string{user, group} {
		if _, err := strconv.Atoi(v); v != "" && v != "root" && err != nil {
			return true
		}
	}
	return false
}

// importsNeedOwners tells whether imports name owners the image must look
// up.
func importsNeedOwners(ims []config.Import) bool {
	for _, im := range ims {
		if needsLookup(im.Owner, im.Group) {
			return true
		}
	}
	return false
}
