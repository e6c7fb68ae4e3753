package testlog

import (
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// A goroutine that keeps logging after the test has returned must not
// touch the finished test: under -race this test fails if it does.
func TestLateLinesAreDropped(t *testing.T) {
	var log zerolog.Logger
	started := make(chan struct{})
	var wg sync.WaitGroup
	t.Run("inner", func(t *testing.T) {
		log = New(t, zerolog.InfoLevel)
		log.Info().Msg("during the test")
		wg.Add(1)
		go func() {
			defer wg.Done()
			close(started)
			for deadline := time.Now().Add(50 * time.Millisecond); time.Now().Before(deadline); {
				log.Info().Msg("after the test")
			}
		}()
		<-started
	})
	wg.Wait()
}

func TestLevelFilters(t *testing.T) {
	rec := &recorder{TB: t}
	log := New(rec, zerolog.WarnLevel)
	log.Info().Msg("quiet")
	log.Warn().Msg("loud")
	if len(rec.lines) != 1 || rec.lines[0] != `{"level":"warn","message":"loud"}` {
		t.Fatalf("lines = %q, want only the warning", rec.lines)
	}
}

// recorder is a testing.TB that keeps what Log is given.
type recorder struct {
	testing.TB
	lines []string
}

func (r *recorder) Log(args ...any) {
	for _, a := range args {
		r.lines = append(r.lines, a.(string))
	}
}

func (r *recorder) Helper() {}
