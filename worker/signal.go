package worker

import (
	"os"
	"os/signal"
	"syscall"
)

// The runner stops a cancelled job's hooks with SIGTERM (and ^C reaches a
// worker run by hand as SIGINT).
func notifyStop(c chan<- os.Signal) { signal.Notify(c, syscall.SIGTERM, syscall.SIGINT) }

func stopNotify(c chan os.Signal) {
	signal.Stop(c)
	close(c)
}
