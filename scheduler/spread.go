package scheduler

import (
	"time"

	"go.uber.org/zap"
)

// enqueueScheduled queues the jobs of an hourly trigger: at once, or with
// QueueOptions.Spread after the installation's delay, so that the fleet's
// background Confluence calls spread over the hour instead of bursting when
// Forge fires the triggers. A delayed queueing lives in this replica's
// memory only: lost on a restart, the next hourly trigger queues it again.
// The jobs are guarded by the uninstall tombstone when they run, and a
// closed queue drops them.
func (s *Service) enqueueScheduled(inst string) {
	if s.spread == nil {
		s.enqueueJobs(inst)
		return
	}
	d := s.spread(inst, s.now())
	if d <= 0 {
		s.enqueueJobs(inst)
		return
	}
	s.log.Debug("hourly jobs wait for the installation's moment of the hour",
		zap.String("installation_id", inst), zap.Duration("delay", d))
	time.AfterFunc(d, func() { s.enqueueJobs(inst) })
}
