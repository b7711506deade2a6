package stages

import "testing"

func TestOwners(t *testing.T) {
	o := ParseOwners([]byte("root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n# comment\nbroken line\nwww-data:x:33:33:www:/var/www:/usr/sbin/nologin\n"),
		[]byte("root:x:0:\nwww-data:x:33:\napps:x:1001:app\n"))
	for _, c := range []struct {
		user, group string
		uid, gid    int
		err         bool
	}{
		{"", "", 0, 0, false},
		{"root", "", 0, 0, false},
		{"app", "", 1000, 1001, false}, // the owner's primary group
		{"app", "www-data", 1000, 33, false},
		{"www-data", "www-data", 33, 33, false},
		{"1000", "", 1000, 1001, false}, // a numeric owner the image names: its group
		{"4242", "", 4242, 0, false},
		{"4242", "17", 4242, 17, false},
		{"", "apps", 0, 1001, false},
		{"nobody", "", 0, 0, true},
		{"app", "nogroup", 0, 0, true},
	} {
		uid, gid, err := o.IDs(c.user, c.group)
		if (err != nil) != c.err || (!c.err && (uid != c.uid || gid != c.gid)) {
			t.Errorf("IDs(%q, %q) = %d, %d, %v", c.user, c.group, uid, gid, err)
		}
	}
	// An image without /etc/passwd knows root and ids.
	empty := ParseOwners(nil, nil)
	if uid, gid, err := empty.IDs("root", "root"); err != nil || uid != 0 || gid != 0 {
		t.Errorf("root in an empty image: %d %d %v", uid, gid, err)
	}
	if !needsLookup("app", "") || needsLookup("root", "0") || needsLookup("", "") || !needsLookup("1", "wheel") {
		t.Error("needsLookup")
	}
}
