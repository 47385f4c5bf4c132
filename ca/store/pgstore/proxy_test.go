package pgstore

import (
	"io"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
)

// cutProxy relays TCP to PostgreSQL. Armed, it forwards the client's
// next bytes to the server and then cuts the client off before any
// answer: the client cannot know what the server did with them.
type cutProxy struct {
	dsn   string
	armed atomic.Bool
	wg    sync.WaitGroup
}

func newCutProxy(t *testing.T, dsn string) *cutProxy {
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	upstream := u.Host
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u.Host = l.Addr().String()
	p := &cutProxy{dsn: u.String()}
	var mu sync.Mutex
	var conns []net.Conn
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			client, err := l.Accept()
			if err != nil {
				return
			}
			server, err := net.Dial("tcp", upstream)
			if err != nil {
				client.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, client, server)
			mu.Unlock()
			p.wg.Add(2)
			go func() { defer p.wg.Done(); p.up(client, server) }()
			go func() { defer p.wg.Done(); io.Copy(client, server); client.Close() }()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *cutProxy) arm() { p.armed.Store(true) }

// up relays client to server; armed, it closes the client first, then
// forwards the bytes: the server acts on them, the client never hears.
func (p *cutProxy) up(client, server net.Conn) {
	buf := make([]byte, 64<<10)
	for {
		n, err := client.Read(buf)
		if n > 0 {
			if p.armed.CompareAndSwap(true, false) {
				client.Close()
			}
			if _, werr := server.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return // the server connection stays open until cleanup
		}
	}
}
