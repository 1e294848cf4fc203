package scheduler

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/forge-remote/forge-remote/forge/budget"
	"github.com/forge-remote/forge-remote/internal/testwait"
)

// With Spread, an hourly trigger's jobs wait for the installation's moment
// of the hour instead of running when Forge fires the trigger.
func TestScheduledJobsSpreadOverTheHour(t *testing.T) {
	ran := make(chan string, 2)
	asked := make(chan time.Duration, 2)
	e := newEnv(t, func(o *testOptions) {
		o.Spread = func(inst string, now time.Time) time.Duration {
			d := budget.Delay(inst, now)
			asked <- d
			return 20 * time.Millisecond // the test's stand-in for d
		}
		o.Jobs = []Job{{Name: "count", Run: func(_ context.Context, inst string) error {
			ran <- inst
			return nil
		}}}
	})
	if err := e.svc.Scheduled(t.Context(), e.inv(instA, cloudA)); err != nil {
		t.Fatal(err)
	}
	e.svc.run.waitIdle()
	select {
	case <-ran:
		t.Fatal("the job ran when the trigger came, before its delay")
	default:
	}
	if d := <-asked; d < 0 || d >= time.Hour {
		t.Fatalf("delay %v", d)
	}
	if got := testwait.Recv(t, "the delayed job", ran); got != instA {
		t.Fatalf("ran %q", got)
	}
}

// A job the points budget refused waits: counted "waiting", not a failure.
func TestBudgetRefusalIsWaiting(t *testing.T) {
	err := &budget.PausedError{Kind: budget.ProfileSync, Reason: budget.ReasonReserve}
	if result, code := classify(errors.Join(errors.New("x"), err)); result != "waiting" || code != "confluence_budget" {
		t.Fatalf("classify = %s, %s", result, code)
	}
}
