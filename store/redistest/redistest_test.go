package redistest_test

import (
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/forge-remote/forge-remote/store/redistest"
)

func TestServer(t *testing.T) {
	ctx := t.Context()
	s := redistest.Start(t)
	if want := "redis://" + s.Addr() + "/0"; s.URL() != want {
		t.Errorf("URL = %q; want %q", s.URL(), want)
	}
	c := s.Client()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	s.Restart()
	if n := c.Exists(ctx, "k").Val(); n != 0 {
		t.Error("data survived a restart; want --save \"\"")
	}
	if err := c.Ping(ctx).Err(); err != nil {
		t.Errorf("Ping after Restart on the same port: %v", err)
	}
}

func TestPassword(t *testing.T) {
	s := redistest.StartWithPassword(t, "pw")
	if !strings.Contains(s.URL(), ":pw@") {
		t.Errorf("URL %q lacks the password", s.URL())
	}
	if err := s.Client().Ping(t.Context()).Err(); err != nil {
		t.Errorf("Client with the password: %v", err)
	}
}

// recorder stands in for the test so that a skip or failure can be seen
// rather than taken.
type recorder struct {
	testing.TB
	skipped, failed string
}

func (r *recorder) Skipf(format string, args ...any) {
	r.skipped = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (r *recorder) Fatalf(format string, args ...any) {
	r.failed = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestMissingBinary(t *testing.T) {
	for _, ci := range []string{"", "1"} {
		t.Run("CI="+ci, func(t *testing.T) {
			t.Setenv("PATH", t.TempDir())
			t.Setenv("CI", ci)
			r := &recorder{TB: t}
			done := make(chan struct{})
			go func() {
				defer close(done)
				redistest.Start(r)
			}()
			<-done
			want, got, other := "skip", r.skipped, r.failed
			if ci != "" {
				want, got, other = "fail", r.failed, r.skipped
			}
			if !strings.Contains(got, "apt-get install -y redis-server") || other != "" {
				t.Errorf("skipped %q, failed %q; want to %s saying how to install", r.skipped, r.failed, want)
			}
		})
	}
}
