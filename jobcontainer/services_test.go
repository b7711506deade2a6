package jobcontainer

import (
	"reflect"
	"testing"
)

func TestLocalEngineAndPorts(t *testing.T) {
	for host, want := range map[string]bool{
		"": true, "unix:///var/run/docker.sock": true, "tcp://127.0.0.1:2375": true, "tcp://localhost:2375": true,
		"tcp://docker.example.com:2376": false, "ssh://builder": false,
	} {
		if got := localEngine(host); got != want {
			t.Errorf("localEngine(%q) = %v", host, got)
		}
	}
	if got := tcpPorts([]string{"8080/tcp", "53/udp", "9090", "x/tcp"}); !reflect.DeepEqual(got, []int{8080, 9090}) {
		t.Errorf("tcpPorts = %v", got)
	}
	if got := entrypointOf([]string{""}); got == nil || len(got) != 0 {
		t.Errorf(`entrypoint [""] = %#v, want cleared`, got)
	}
}
