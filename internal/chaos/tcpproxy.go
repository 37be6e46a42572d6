//go:build chaos

package chaos

import (
	"net"
	"sync"
	"testing"
	"time"
)

// TCPProxy is a plain TCP proxy on 127.0.0.1 in front of one upstream
// address, with network faults a scenario turns on and off: Reset (every
// open connection closed with a TCP RST), BlackHole (for a while every
// connection, open or new, forwards nothing either way — bytes read are
// discarded — and is closed at the end) and SetSlow (every chunk from the
// upstream to the client is held for a while before it is forwarded). It
// knows nothing of the protocol; a RESP-aware proxy (redistest.Proxy) can sit
// behind it. It is closed in t.Cleanup.
type TCPProxy struct {
	upstream string
	ln       net.Listener
	wg       sync.WaitGroup

	mu     sync.Mutex
	conns  map[*tcpPair]struct{}
	holed  bool          // a black hole is on: new connections are holed
	slow   time.Duration // delay of every upstream → client chunk
	closed bool
	stats  map[string]int // connections accepted, reset, holed
	// tainted are the local addresses of upstream connections on which
	// the client may not have received what the upstream sent in time
	// (held by SetSlow, discarded in a black hole, or reset).
	tainted map[string]bool
}

type tcpPair struct {
	client, up net.Conn // up is nil for a connection accepted in a black hole
	once       sync.Once

	mu     sync.Mutex
	holed  bool
	closed bool
}

func (p *tcpPair) isHoled() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.holed
}

// close closes both sides; with reset, the client's side with a RST
// (SO_LINGER 0).
func (p *tcpPair) close(reset bool) {
	p.once.Do(func() {
		p.mu.Lock()
		p.closed = true
		p.mu.Unlock()
		if tc, ok := p.client.(*net.TCPConn); ok && reset {
			_ = tc.SetLinger(0)
		}
		_ = p.client.Close()
		p.mu.Lock()
		up := p.up
		p.mu.Unlock()
		if up != nil {
			if tc, ok := up.(*net.TCPConn); ok && reset {
				_ = tc.SetLinger(0)
			}
			_ = up.Close()
		}
	})
}

// NewTCPProxy starts a proxy to upstream (host:port) on a free loopback port.
func NewTCPProxy(t testing.TB, upstream string) *TCPProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("tcp proxy: %v", err)
	}
	p := &TCPProxy{upstream: upstream, ln: ln, conns: map[*tcpPair]struct{}{}, stats: map[string]int{}, tainted: map[string]bool{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.Close)
	return p
}

// Addr is the proxy's host:port.
func (p *TCPProxy) Addr() string { return p.ln.Addr().String() }

// Close stops the proxy and closes every connection.
func (p *TCPProxy) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	pairs := p.pairsLocked()
	p.mu.Unlock()
	_ = p.ln.Close()
	for _, c := range pairs {
		c.close(false)
	}
	p.wg.Wait()
}

func (p *TCPProxy) pairsLocked() []*tcpPair {
	out := make([]*tcpPair, 0, len(p.conns))
	for c := range p.conns {
		out = append(out, c)
	}
	return out
}

// Stats returns counts of connections accepted, reset and black-holed.
func (p *TCPProxy) Stats() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string]int{}
	for k, v := range p.stats {
		out[k] = v
	}
	return out
}

// Open is the number of connections open through the proxy.
func (p *TCPProxy) Open() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// taint records that pair's upstream answers may not have reached the
// client in time.
func (p *TCPProxy) taint(pair *tcpPair) {
	pair.mu.Lock()
	up := pair.up
	pair.mu.Unlock()
	if up == nil {
		return
	}
	p.mu.Lock()
	p.tainted[up.LocalAddr().String()] = true
	p.mu.Unlock()
}

// Tainted reports whether the upstream saw a connection from localAddr
// (its client's address, as the upstream sees it) whose answers the proxy
// held, discarded or cut off by a reset: the client may never have had
// them, or had them late.
func (p *TCPProxy) Tainted(localAddr string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.tainted[localAddr]
}

// Reset closes every open connection with a RST (both sides) and returns
// how many it closed.
func (p *TCPProxy) Reset() int {
	p.mu.Lock()
	pairs := p.pairsLocked()
	p.stats["reset"] += len(pairs)
	p.mu.Unlock()
	for _, c := range pairs {
		p.taint(c)
		c.close(true)
	}
	return len(pairs)
}

// BlackHole makes every open connection, and every one accepted for d,
// forward nothing (what arrives is read and discarded), then closes them all
// and returns how many there were. It blocks for d.
func (p *TCPProxy) BlackHole(d time.Duration) int {
	p.mu.Lock()
	p.holed = true
	for c := range p.conns {
		c.mu.Lock()
		c.holed = true
		c.mu.Unlock()
	}
	pairs := p.pairsLocked()
	p.mu.Unlock()
	for _, c := range pairs {
		p.taint(c)
	}
	time.Sleep(d)
	p.mu.Lock()
	p.holed = false
	var holed []*tcpPair
	for c := range p.conns {
		if c.isHoled() {
			holed = append(holed, c)
		}
	}
	p.stats["holed"] += len(holed)
	p.mu.Unlock()
	for _, c := range holed {
		c.close(false)
	}
	return len(holed)
}

// SetSlow holds every chunk from the upstream for d before forwarding it
// (0: no delay).
func (p *TCPProxy) SetSlow(d time.Duration) {
	p.mu.Lock()
	p.slow = d
	p.mu.Unlock()
}

func (p *TCPProxy) slowness() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.slow
}

func (p *TCPProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go p.serve(c)
	}
}

func (p *TCPProxy) serve(client net.Conn) {
	defer p.wg.Done()
	pair := &tcpPair{client: client}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		_ = client.Close()
		return
	}
	p.stats["accepted"]++
	pair.holed = p.holed
	p.conns[pair] = struct{}{}
	p.mu.Unlock()
	defer func() {
		pair.close(false)
		p.mu.Lock()
		delete(p.conns, pair)
		p.mu.Unlock()
	}()
	if pair.isHoled() {
		// Accepted in a black hole: read the client and discard it until
		// it, or the end of the black hole, closes the connection.
		buf := make([]byte, 32<<10)
		for {
			if _, err := client.Read(buf); err != nil {
				return
			}
		}
	}
	up, err := net.DialTimeout("tcp", p.upstream, 5*time.Second)
	if err != nil {
		return // as if the upstream were down
	}
	pair.mu.Lock()
	pair.up = up
	closed := pair.closed
	pair.mu.Unlock()
	if closed { // reset meanwhile
		_ = up.Close()
		return
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.pump(pair, client, up, false)
		pair.close(false)
	}()
	p.pump(pair, up, client, true)
	pair.close(false)
	<-done
}

// pump copies src to dst chunk by chunk until either fails, discarding
// while the pair is holed. down is the upstream → client direction, which
// SetSlow delays.
func (p *TCPProxy) pump(pair *tcpPair, src, dst net.Conn, down bool) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && down && pair.isHoled() {
			p.taint(pair)
		}
		if n > 0 && !pair.isHoled() {
			if down {
				if d := p.slowness(); d > 0 {
					p.taint(pair)
					time.Sleep(d)
				}
			}
			if !pair.isHoled() {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			}
		}
		if err != nil {
			return
		}
	}
}
