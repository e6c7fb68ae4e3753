package cache

import (
	"context"
	"errors"
	"sync"
)

// flightGroup makes concurrent identical upstream requests share one:
// when a hundred CI jobs pull the same new tag at once, the upstream sees
// one manifest GET (Docker Hub counts those against its pull limit).
type flightGroup[T any] struct {
	mu sync.Mutex
	m  map[string]*flightCall[T]
	// joined, if set, is called when a request waits for another's (tests).
	joined func(key string)
}

type flightCall[T any] struct {
	done chan struct{}
	val  T
	err  error
}

// do runs fn once for all concurrent callers with the same key. A caller
// whose own context ends stops waiting; if the request it waited for was
// cancelled because that request's client went away, it runs fn itself.
func (g *flightGroup[T]) do(ctx context.Context, key string, fn func() (T, error)) (T, error) {
	g.mu.Lock()
	if g.m == nil {
		g.m = map[string]*flightCall[T]{}
	}
	if c, ok := g.m[key]; ok {
		hook := g.joined
		g.mu.Unlock()
		if hook != nil {
			hook(key)
		}
		select {
		case <-c.done:
		case <-ctx.Done():
			var zero T
			return zero, ctx.Err()
		}
		if errors.Is(c.err, context.Canceled) && ctx.Err() == nil {
			return fn()
		}
		return c.val, c.err
	}
	c := &flightCall[T]{done: make(chan struct{})}
	g.m[key] = c
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		delete(g.m, key)
		g.mu.Unlock()
		close(c.done)
	}()
	c.err = errFlightPanicked // seen by waiters only if fn panics
	v, err := fn()
	c.val, c.err = v, err
	return v, err
}

var errFlightPanicked = errors.New("the shared upstream request failed")
