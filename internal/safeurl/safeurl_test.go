package safeurl

import (
	"net/url"
	"testing"
)

func TestOK(t *testing.T) {
	for raw, want := range map[string]bool{
		"https://api.atlassian.com/ex/confluence/c1": true,
		"HTTPS://acme.weavy.io":                      true,
		"https://acme.weavy.io:8443/x?y#z":           true,
		"http://127.0.0.1":                           true,
		"http://127.0.0.1:8080/ex/confluence/c1":     true,
		"http://127.1.2.3:1":                         true,
		"http://localhost:9999":                      true,
		"http://LOCALHOST":                           true,
		"http://[::1]:8080/x":                        true,
		"http://[::1]":                               true,

		"https://":                            false,
		"https:///path":                       false,
		"http://evil.example":                 false,
		"http://evil.example/127.0.0.1":       false,
		"http://127.0.0.1.evil.example":       false,
		"http://localhost.evil.example":       false,
		"http://127.0.0.1@evil.example":       false,
		"http://user@127.0.0.1":               false,
		"http://127.0.0.1:80x":                false,
		"http://10.0.0.1":                     false,
		"http://[::2]":                        false,
		"http://[::1%25lo]":                   false,
		"http://[::1":                         false,
		"http://[::1]x":                       false,
		"http://::1":                          false,
		"http://0127.0.0.1":                   false,
		"ftp://127.0.0.1":                     false,
		"javascript:alert(1)//127.0.0.1":      false,
		"127.0.0.1:8080":                      false,
		"":                                    false,
		"http:/127.0.0.1":                     false,
		"xhttps://acme.weavy.io":              false,
		"http://127.0.0.1\\@evil.example":     false,
		"http://evil.example#@127.0.0.1":      false,
		"http://evil.example?@127.0.0.1":      false,
		"http://evil.example\\@127.0.0.1:80/": false,
		"http://127.0.0.1:80\\@evil.example/": false,
	} {
		if got := OK(raw); got != want {
			t.Errorf("OK(%q) = %v, want %v", raw, got, want)
		}
		// Whatever OK accepts over http, net/url reads as the same loopback host.
		if u, err := url.Parse(raw); OK(raw) && err == nil && u.Scheme == "http" && !Loopback(u.Hostname()) {
			t.Errorf("OK(%q) accepts a host net/url reads as %q", raw, u.Hostname())
		}
	}
}

func TestLoopback(t *testing.T) {
	for host, want := range map[string]bool{
		"localhost": true, "127.0.0.1": true, "127.255.255.254": true, "::1": true, "::ffff:127.0.0.1": true,
		"": false, "::": false, "0.0.0.0": false, "128.0.0.1": false, "example.com": false, "::1%lo": false, "[::1]": false,
	} {
		if got := Loopback(host); got != want {
			t.Errorf("Loopback(%q) = %v, want %v", host, got, want)
		}
	}
}

func TestOKAllocatesNothing(t *testing.T) {
	for _, raw := range []string{"https://api.atlassian.com/ex/confluence/c1", "http://127.0.0.1:8080/x", "http://[::1]:1/", "http://evil.example"} {
		if n := testing.AllocsPerRun(100, func() { OK(raw) }); n != 0 {
			t.Errorf("OK(%q) allocates %v times", raw, n)
		}
	}
}
