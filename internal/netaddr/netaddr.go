// Package netaddr answers questions about network addresses that more
// than one part of stagehand asks.
package netaddr

import (
	"net"
	"strings"
)

// Loopback tells a host (with or without a port) on this machine:
// localhost or a loopback address. Docker and go-containerregistry treat
// such registries and engines as local.
func Loopback(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
