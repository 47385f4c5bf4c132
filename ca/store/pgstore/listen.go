package pgstore

import (
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Listener reconnection backoff bounds.
const (
	backoffMin = 100 * time.Millisecond
	backoffMax = 5 * time.Second
)

// listenConn opens a connection listening on the store's channel.
func (c *Conn) listenConn(ctx context.Context, cfg *pgx.ConnConfig) (*pgx.Conn, error) {
	l, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if _, err := l.Exec(ctx, "LISTEN "+channel); err != nil {
		l.Close(context.Background())
		return nil, err
	}
	return l, nil
}

// listen dispatches notifications until ctx is done, reconnecting with a
// bounded exponential backoff when the connection is lost. After a
// reconnection it asks for a resync: notifications sent meanwhile are
// lost.
func (c *Conn) listen(ctx context.Context, cfg *pgx.ConnConfig, l *pgx.Conn) {
	backoff := backoffMin
	for {
		if l != nil {
			err := c.receive(ctx, l)
			l.Close(context.Background())
			if ctx.Err() != nil {
				return
			}
			c.log.Warn("pgstore: lost the LISTEN connection; reconnecting", "database", c.target, "err", c.redact(err))
			l = nil
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		var err error
		if l, err = c.listenConn(ctx, cfg); err != nil {
			if ctx.Err() != nil {
				return
			}
			c.log.Warn("pgstore: LISTEN reconnection failed", "database", c.target, "err", c.redact(err), "retry_in", backoff)
			backoff = min(2*backoff, backoffMax)
			continue
		}
		c.m.reconnects.Inc()
		c.log.Info("pgstore: LISTEN connection restored", "database", c.target)
		backoff = backoffMin
		c.resyncSoon()
	}
}

// receive dispatches the notifications of l until it fails.
func (c *Conn) receive(ctx context.Context, l *pgx.Conn) error {
	for {
		n, err := l.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		if n.Channel == channel {
			c.dispatch(n.Payload)
		}
	}
}

// dispatch handles a "keyspace:version" notification.
func (c *Conn) dispatch(payload string) {
	i := strings.LastIndexByte(payload, ':')
	if i < 0 {
		return
	}
	v, err := strconv.ParseInt(payload[i+1:], 10, 64)
	if err != nil {
		return
	}
	c.mu.Lock()
	ks := c.keyspaces[payload[:i]]
	c.mu.Unlock()
	if ks != nil {
		ks.advance(v)
	}
}

func (c *Conn) resyncSoon() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// poll reads the versions of the open keyspaces every resync interval,
// and when the listener asks, firing Changed for commits it missed.
func (c *Conn) poll(ctx context.Context) {
	t := time.NewTicker(c.resync)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-c.kick:
		}
		if err := c.resyncOnce(ctx); err != nil && ctx.Err() == nil {
			c.log.Warn("pgstore: resync poll failed", "database", c.target, "err", c.redact(err))
		}
	}
}

func (c *Conn) resyncOnce(ctx context.Context) error {
	c.mu.Lock()
	names := make([]string, 0, len(c.keyspaces))
	for n := range c.keyspaces {
		names = append(names, n)
	}
	c.mu.Unlock()
	if len(names) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, max(c.resync, 5*time.Second))
	defer cancel()
	rows, err := c.pool.Query(ctx, sqlVersions, names)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var name string
		var v int64
		if err := rows.Scan(&name, &v); err != nil {
			return err
		}
		c.mu.Lock()
		ks := c.keyspaces[name]
		c.mu.Unlock()
		if ks != nil {
			ks.advance(v)
		}
	}
	return rows.Err()
}
