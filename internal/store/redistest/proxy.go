package redistest

import (
	"bufio"
	"bytes"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Limits of the proxy's RESP parser. maxBulk is Redis's own largest
// proto-max-bulk-len; the others only stop a corrupt stream from making the
// proxy allocate without bound.
const (
	maxBulk      = 512 << 20
	maxLine      = 64 << 20
	maxDepth     = 1000
	dialTimeout  = 5 * time.Second
	drainTimeout = 10 * time.Second
	bufSize      = 64 << 10
)

// Proxy is a TCP proxy on 127.0.0.1 in front of a Redis server that
// understands RESP (RESP2 and RESP3) well enough to find command and reply
// boundaries, so that a test can lose the reply to one chosen command after
// Redis has run it (see DropReply). Everything else passes through unchanged,
// pipelined traffic included. It is closed in tb.Cleanup; protocol errors in
// the server's replies (which the proxy cannot parse) fail the test there.
//
// Each client connection gets its own connection to the upstream server,
// made when the client connects. A connection that enters a mode in which
// commands no longer answer with exactly one reply (SUBSCRIBE and its
// relatives, MONITOR, SYNC, PSYNC, CLIENT REPLY) or sends something that is not
// a valid command is from then on copied as raw bytes and never matched.
type Proxy struct {
	tb       testing.TB
	upstream string
	ln       net.Listener
	wg       sync.WaitGroup // the accept loop and every connection's goroutines

	mu     sync.Mutex
	counts map[string]int // commands seen, by lower-case name (Commands)
	armed  *arm           // the DropReply waiting for its match, or nil
	conns  map[*proxyConn]struct{}
	closed bool
	errs   []error // protocol errors, reported in Cleanup
}

// arm is one DropReply call.
type arm struct {
	match   func(args [][]byte) bool
	dropped atomic.Int32
}

// NewProxy starts a proxy on a free loopback port in front of the Redis
// server at upstreamAddr (host:port) and closes it, with every connection
// through it, in tb.Cleanup.
func NewProxy(tb testing.TB, upstreamAddr string) *Proxy {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("redistest: proxy: listen: %v", err)
	}
	p := &Proxy{tb: tb, upstream: upstreamAddr, ln: ln, conns: make(map[*proxyConn]struct{})}
	p.wg.Add(1)
	go p.acceptLoop()
	tb.Cleanup(p.close)
	return p
}

// Addr returns the proxy's address, "127.0.0.1:port".
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// URL returns the proxy's redis:// URL (database 0, no credentials: give a
// client the upstream's options with Addr replaced when it needs more).
func (p *Proxy) URL() string { return "redis://" + p.Addr() + "/0" }

// DropReply arms the proxy: the next command, on any connection, for which
// match returns true is forwarded to Redis, Redis's full reply to it is read
// and discarded, and the client's connection is closed, so the client sees a
// read error (EOF) after the command ran. Replies to the commands the client
// sent before it on that connection are delivered first; commands it
// pipelined after it are not forwarded. Only the first match is affected,
// and a later DropReply replaces an arm that has not matched yet.
//
// match is called on the proxy's goroutines, one call at a time, with a
// command's arguments (the command name first, as the client spelled it); it
// must not keep args. The returned function reports how many replies this
// arm has dropped so far: 0, or 1 once the reply arrived and was discarded.
func (p *Proxy) DropReply(match func(args [][]byte) bool) (dropped func() int) {
	a := &arm{match: match}
	p.mu.Lock()
	p.armed = a
	p.mu.Unlock()
	return func() int { return int(a.dropped.Load()) }
}

// IsScript returns a DropReply matcher for the Lua script src: EVAL or
// EVAL_RO with src, or EVALSHA or EVALSHA_RO with its SHA-1 (what
// redis.Script.Run sends). Note that an EVALSHA that Redis answers NOSCRIPT
// matches too, although the script did not run.
func IsScript(src string) func(args [][]byte) bool {
	sum := sha1.Sum([]byte(src))
	sha := hex.EncodeToString(sum[:])
	return func(args [][]byte) bool {
		if len(args) < 2 {
			return false
		}
		name := args[0]
		switch {
		case bytes.EqualFold(name, []byte("evalsha")), bytes.EqualFold(name, []byte("evalsha_ro")):
			return bytes.EqualFold(args[1], []byte(sha))
		case bytes.EqualFold(name, []byte("eval")), bytes.EqualFold(name, []byte("eval_ro")):
			return string(args[1]) == src
		}
		return false
	}
}

// IsCommand returns a DropReply matcher for the command name, in any case
// ("INCR" matches "incr").
func IsCommand(name string) func(args [][]byte) bool {
	return func(args [][]byte) bool {
		return len(args) > 0 && bytes.EqualFold(args[0], []byte(name))
	}
}

// Commands returns how many commands of each name (lower case) clients
// sent through the proxy: what a client asks of Redis, one round trip each
// unless pipelined (a script's own calls are not counted, unlike in INFO
// commandstats). ResetCommands starts the count again.
func (p *Proxy) Commands() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]int, len(p.counts))
	for k, v := range p.counts {
		out[k] = v
	}
	return out
}

// ResetCommands sets every count of Commands to zero.
func (p *Proxy) ResetCommands() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.counts = nil
}

// take returns the armed DropReply if args match it, disarming it, and
// counts the command.
func (p *Proxy) take(args [][]byte) *arm {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(args) > 0 {
		if p.counts == nil {
			p.counts = map[string]int{}
		}
		p.counts[strings.ToLower(string(args[0]))]++
	}
	a := p.armed
	if a == nil || !a.match(args) {
		return nil
	}
	p.armed = nil
	return a
}

// fail records a protocol error for Cleanup to report.
func (p *Proxy) fail(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.errs = append(p.errs, err)
}

// close stops the proxy, closes every connection and waits for all its
// goroutines, then reports the protocol errors seen.
func (p *Proxy) close() {
	p.tb.Helper()
	p.mu.Lock()
	p.closed = true
	conns := make([]*proxyConn, 0, len(p.conns))
	for pc := range p.conns {
		conns = append(conns, pc)
	}
	p.mu.Unlock()
	_ = p.ln.Close()
	for _, pc := range conns {
		pc.closeAll()
	}
	p.wg.Wait()
	p.mu.Lock()
	errs := p.errs
	p.mu.Unlock()
	for _, err := range errs {
		p.tb.Errorf("redistest: proxy %s -> %s: %v", p.Addr(), p.upstream, err)
	}
}

func (p *Proxy) acceptLoop() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			p.mu.Lock()
			closed := p.closed
			p.mu.Unlock()
			if !closed {
				p.fail(fmt.Errorf("accept: %w", err))
			}
			return
		}
		p.wg.Add(1)
		go p.serve(c.(*net.TCPConn))
	}
}

// proxyConn is one client connection and its upstream connection.
type proxyConn struct {
	p        *Proxy
	client   *net.TCPConn
	upstream *net.TCPConn
	once     sync.Once

	mu      sync.Mutex
	pending []*arm // one entry per command awaiting its reply, in order; non-nil: drop that reply
}

func (pc *proxyConn) closeAll() {
	pc.once.Do(func() {
		_ = pc.client.Close()
		_ = pc.upstream.Close()
	})
}

// push records that a reply is due for a command just parsed.
func (pc *proxyConn) push(a *arm) {
	pc.mu.Lock()
	pc.pending = append(pc.pending, a)
	pc.mu.Unlock()
}

// pop returns the entry of the oldest command awaiting its reply; ok is
// false when none awaits one (an unsolicited reply, forwarded).
func (pc *proxyConn) pop() (a *arm, ok bool) {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if len(pc.pending) == 0 {
		return nil, false
	}
	a = pc.pending[0]
	pc.pending[0] = nil
	pc.pending = pc.pending[1:]
	return a, true
}

func (p *Proxy) serve(client *net.TCPConn) {
	defer p.wg.Done()
	up, err := net.DialTimeout("tcp", p.upstream, dialTimeout)
	if err != nil {
		// As if Redis were down: the client sees its connection closed.
		_ = client.Close()
		return
	}
	pc := &proxyConn{p: p, client: client, upstream: up.(*net.TCPConn)}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		pc.closeAll()
		return
	}
	p.conns[pc] = struct{}{}
	p.mu.Unlock()
	defer func() {
		pc.closeAll()
		p.mu.Lock()
		delete(p.conns, pc)
		p.mu.Unlock()
	}()

	c2sDone := make(chan struct{})
	go func() {
		defer close(c2sDone)
		if err := pc.clientToServer(); errors.Is(err, io.EOF) {
			// The client is done sending: let Redis see it too, and
			// the server-to-client side end when Redis closes.
			_ = pc.upstream.CloseWrite()
		} else {
			pc.closeAll()
		}
	}()
	if pc.serverToClient() {
		// The reply was dropped: the client reads what came before it,
		// then EOF. Its further commands are read and discarded until
		// it closes, so that closing does not reset the connection.
		_ = pc.client.CloseWrite()
		_ = pc.upstream.Close()
		_ = pc.client.SetReadDeadline(time.Now().Add(drainTimeout))
	} else {
		pc.closeAll()
	}
	<-c2sDone
}

// clientToServer forwards commands from the client to Redis, recording for
// each one whether its reply is to be dropped. It returns io.EOF when the
// client closed its side cleanly.
func (pc *proxyConn) clientToServer() error {
	cr := bufio.NewReaderSize(pc.client, bufSize)
	uw := bufio.NewWriterSize(pc.upstream, bufSize)
	for {
		cmd, err := readCommand(cr)
		if err != nil && !errors.Is(err, errBadCommand) {
			if len(cmd.raw) > 0 {
				// A command cut short: pass on what came, as a
				// closing connection would.
				_, _ = uw.Write(cmd.raw)
				_ = uw.Flush()
			}
			return err
		}
		if err != nil || (cmd.args != nil && modeChange(cmd.args)) {
			// From here on replies no longer match commands one to one
			// (or Redis is about to answer a protocol error and close):
			// copy raw bytes.
			if _, err := uw.Write(cmd.raw); err != nil {
				return err
			}
			if err := uw.Flush(); err != nil {
				return err
			}
			_, err := io.Copy(pc.upstream, cr)
			if err == nil {
				err = io.EOF
			}
			return err
		}
		var a *arm
		if cmd.args != nil {
			a = pc.p.take(cmd.args)
		}
		if cmd.reply {
			pc.push(a) // before Redis can see it, so before its reply can arrive
		}
		if _, err := uw.Write(cmd.raw); err != nil {
			return err
		}
		if a != nil {
			// Nothing the client sends after the command whose reply is
			// lost reaches Redis.
			if err := uw.Flush(); err != nil {
				return err
			}
			_, err := io.Copy(io.Discard, cr)
			if err == nil {
				err = io.EOF
			}
			return err
		}
		if cr.Buffered() == 0 {
			if err := uw.Flush(); err != nil {
				return err
			}
		}
	}
}

// serverToClient forwards replies from Redis to the client until one is to be
// dropped, which it discards and reports with true, or until either side
// fails.
func (pc *proxyConn) serverToClient() (dropped bool) {
	ur := bufio.NewReaderSize(pc.upstream, bufSize)
	cw := bufio.NewWriterSize(pc.client, bufSize)
	var buf []byte
	for {
		var kind byte
		var err error
		buf, kind, err = readValue(ur, buf[:0], 0)
		if err == nil && kind == '.' {
			err = protoErrorf("end marker outside a streamed aggregate")
		}
		if err != nil {
			var perr *protocolError
			if errors.As(err, &perr) {
				pc.p.fail(fmt.Errorf("reply from Redis: %w", err))
			}
			_ = cw.Flush()
			return false
		}
		if kind != '>' { // a push is no reply to a command
			if a, ok := pc.pop(); ok && a != nil {
				a.dropped.Add(1)
				_ = cw.Flush()
				return true
			}
		}
		if _, err := cw.Write(buf); err != nil {
			return false
		}
		if ur.Buffered() == 0 {
			if err := cw.Flush(); err != nil {
				return false
			}
		}
		if cap(buf) > 1<<20 {
			buf = nil // do not hold on to the buffer of a big reply
		}
	}
}

// modeChange reports whether the command args puts the connection in a mode
// where commands do not get exactly one reply each.
func modeChange(args [][]byte) bool {
	name := args[0]
	for _, n := range []string{
		"subscribe", "psubscribe", "ssubscribe", "unsubscribe", "punsubscribe", "sunsubscribe",
		"monitor", "sync", "psync",
	} {
		if bytes.EqualFold(name, []byte(n)) {
			return true
		}
	}
	return bytes.EqualFold(name, []byte("client")) && len(args) > 1 && bytes.EqualFold(args[1], []byte("reply"))
}

// protocolError is a malformed RESP stream.
type protocolError struct{ msg string }

func (e *protocolError) Error() string { return "RESP protocol error: " + e.msg }

func protoErrorf(format string, args ...any) error {
	return &protocolError{msg: fmt.Sprintf(format, args...)}
}

// errBadCommand marks a client's input that is no valid command.
var errBadCommand = errors.New("not a valid command")

// command is one command read from a client.
type command struct {
	raw   []byte   // its bytes as sent
	args  [][]byte // its arguments (slices of raw), nil for an inline command
	reply bool     // whether Redis answers it (Redis ignores "*0" and blank lines)
}

// readCommand reads one command the way Redis does: a RESP array of bulk
// strings, or an inline command (a line). On errBadCommand, raw holds what
// was read, to be passed on to Redis (which answers a protocol error).
func readCommand(r *bufio.Reader) (command, error) {
	var cmd command
	first, err := r.Peek(1)
	if err != nil {
		return cmd, err
	}
	raw, start, err := readLine(r, nil)
	cmd.raw = raw
	if err != nil {
		return cmd, err
	}
	line := bytes.TrimRight(raw[start:], "\r\n")
	if first[0] != '*' {
		cmd.reply = len(bytes.Fields(line)) > 0
		return cmd, nil
	}
	n, err := strconv.ParseInt(string(line[1:]), 10, 64)
	if err != nil || n > 1024*1024 {
		return cmd, errBadCommand
	}
	if n <= 0 {
		return cmd, nil
	}
	offs := make([][2]int, 0, n)
	for range n {
		var s int
		cmd.raw, s, err = readLine(r, cmd.raw)
		if err != nil {
			return cmd, err
		}
		l := bytes.TrimRight(cmd.raw[s:], "\r\n")
		if len(l) == 0 || l[0] != '$' {
			return cmd, errBadCommand
		}
		size, err := strconv.ParseInt(string(l[1:]), 10, 64)
		if err != nil || size < 0 || size > maxBulk {
			return cmd, errBadCommand
		}
		off := len(cmd.raw)
		cmd.raw, err = readN(r, cmd.raw, int(size)+2)
		if err != nil {
			return cmd, err
		}
		if !bytes.HasSuffix(cmd.raw, []byte("\r\n")) {
			return cmd, errBadCommand
		}
		offs = append(offs, [2]int{off, off + int(size)})
	}
	cmd.args = make([][]byte, len(offs))
	for i, o := range offs {
		cmd.args[i] = cmd.raw[o[0]:o[1]:o[1]]
	}
	cmd.reply = true
	return cmd, nil
}

// readValue appends one complete RESP2 or RESP3 value from r to dst, with
// the attributes before it, and returns its type byte ('>' for a push).
func readValue(r *bufio.Reader, dst []byte, depth int) ([]byte, byte, error) {
	if depth > maxDepth {
		return dst, 0, protoErrorf("values nested more than %d deep", maxDepth)
	}
	dst, start, err := readLine(r, dst)
	if err != nil {
		return dst, 0, err
	}
	if len(dst)-start < 3 || !bytes.HasSuffix(dst[start:], []byte("\r\n")) {
		return dst, 0, protoErrorf("bad line %q", dst[start:])
	}
	line := dst[start : len(dst)-2]
	kind := line[0]
	switch kind {
	case '+', '-', ':', '_', '#', ',', '(', '.':
		return dst, kind, nil
	case '$', '=', '!':
		if string(line[1:]) == "?" { // streamed string: ;len chunks up to ;0
			for {
				var s int
				if dst, s, err = readLine(r, dst); err != nil {
					return dst, 0, err
				}
				n, err := parseLen(dst[s:], ';')
				if err != nil {
					return dst, 0, err
				}
				if n == 0 {
					return dst, kind, nil
				}
				if dst, err = readBlob(r, dst, n); err != nil {
					return dst, 0, err
				}
			}
		}
		n, err := parseLen(dst[start:], kind)
		if err != nil {
			return dst, 0, err
		}
		if n < 0 { // RESP2 null bulk string
			return dst, kind, nil
		}
		dst, err = readBlob(r, dst, n)
		return dst, kind, err
	case '*', '~', '>', '%', '|':
		per := 1
		if kind == '%' || kind == '|' {
			per = 2
		}
		if string(line[1:]) == "?" && kind != '|' { // streamed aggregate, up to "."
			for {
				var k byte
				if dst, k, err = readValue(r, dst, depth+1); err != nil {
					return dst, 0, err
				}
				if k == '.' {
					return dst, kind, nil
				}
			}
		}
		n, err := parseLen(dst[start:], kind)
		if err != nil {
			return dst, 0, err
		}
		for i := int64(0); i < n*int64(per); i++ {
			var k byte
			if dst, k, err = readValue(r, dst, depth+1); err != nil {
				return dst, 0, err
			}
			if k == '.' {
				return dst, 0, protoErrorf("end marker in a counted aggregate")
			}
		}
		if kind == '|' { // attributes: the value they describe follows
			return readValue(r, dst, depth+1)
		}
		return dst, kind, nil
	}
	return dst, 0, protoErrorf("unknown type %q in %q", kind, line)
}

// parseLen parses the length in the line "<prefix><n>\r\n"; -1 is allowed
// (a RESP2 null), nothing less. readBlob bounds the length of a string.
func parseLen(line []byte, prefix byte) (int64, error) {
	l := bytes.TrimSuffix(line, []byte("\r\n"))
	if len(l) < 2 || l[0] != prefix {
		return 0, protoErrorf("bad length line %q", line)
	}
	n, err := strconv.ParseInt(string(l[1:]), 10, 64)
	if err != nil || n < -1 {
		return 0, protoErrorf("bad length line %q", line)
	}
	return n, nil
}

// readBlob appends n bytes and the CRLF after them.
func readBlob(r *bufio.Reader, dst []byte, n int64) ([]byte, error) {
	if n < 0 || n > maxBulk {
		return dst, protoErrorf("bad length %d", n)
	}
	dst, err := readN(r, dst, int(n)+2)
	if err != nil {
		return dst, err
	}
	if !bytes.HasSuffix(dst, []byte("\r\n")) {
		return dst, protoErrorf("string of %d bytes not followed by CRLF", n)
	}
	return dst, nil
}

// readN appends exactly n bytes from r to dst.
func readN(r *bufio.Reader, dst []byte, n int) ([]byte, error) {
	off := len(dst)
	dst = slices.Grow(dst, n)[:off+n]
	got, err := io.ReadFull(r, dst[off:])
	dst = dst[:off+got]
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return dst, err
}

// readLine appends one line, up to and including '\n', to dst and returns
// where it starts. An EOF before any byte is io.EOF; after some, it is
// io.ErrUnexpectedEOF.
func readLine(r *bufio.Reader, dst []byte) ([]byte, int, error) {
	start := len(dst)
	for {
		chunk, err := r.ReadSlice('\n')
		dst = append(dst, chunk...)
		switch {
		case err == nil:
			return dst, start, nil
		case errors.Is(err, bufio.ErrBufferFull):
			if len(dst)-start > maxLine {
				return dst, start, protoErrorf("line longer than %d bytes", maxLine)
			}
		case errors.Is(err, io.EOF) && len(dst) > start:
			return dst, start, io.ErrUnexpectedEOF
		default:
			return dst, start, err
		}
	}
}
