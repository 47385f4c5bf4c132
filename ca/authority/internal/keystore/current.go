package keystore

import (
	"sync"
	"sync/atomic"
)

// Current is the CA in force: what signs now and the trust bundle, one
// snapshot replaced whole by Publish. The authority reads it for every
// signing; the journal's follower publishes into it.
type Current struct {
	ca atomic.Pointer[CA]
	mu sync.Mutex
	ch chan struct{} // closed at the next Publish
}

// NewCurrent returns a Current holding no CA yet.
func NewCurrent() *Current { return &Current{ch: make(chan struct{})} }

// Load returns the CA in force (nil before the first Publish).
func (c *Current) Load() *CA { return c.ca.Load() }

// Publish makes ca the CA in force and closes the channels Changed handed
// out.
func (c *Current) Publish(ca *CA) {
	c.ca.Store(ca)
	c.mu.Lock()
	close(c.ch)
	c.ch = make(chan struct{})
	c.mu.Unlock()
}

// Changed returns a channel closed at the next Publish.
func (c *Current) Changed() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ch
}
