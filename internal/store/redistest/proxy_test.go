package redistest_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/campaign-orchestrator/orchestrator/internal/store/redistest"
)

// proxied is a Redis server with a proxy in front of it.
type proxied struct {
	proxy  *redistest.Proxy
	direct *redis.Client // straight to the server
	prefix string        // for every key, as the server may be shared (REDIS_URL)
	url    string
	opt    *redis.Options // the server's
}

func newProxied(t *testing.T) *proxied {
	t.Helper()
	url, _ := redistest.Start(t)
	opt, err := redis.ParseURL(url)
	if err != nil {
		t.Fatalf("parse %s: %v", url, err)
	}
	direct := redis.NewClient(opt)
	t.Cleanup(func() { _ = direct.Close() })
	return &proxied{
		proxy:  redistest.NewProxy(t, opt.Addr),
		direct: direct,
		prefix: redistest.Prefix(t),
		url:    url,
		opt:    opt,
	}
}

// client returns a go-redis client through the proxy with maxRetries (0:
// go-redis's default of 3, -1: none).
func (px *proxied) client(t *testing.T, maxRetries int) *redis.Client {
	t.Helper()
	opt, err := redis.ParseURL(px.url)
	if err != nil {
		t.Fatalf("parse %s: %v", px.url, err)
	}
	opt.Addr = px.proxy.Addr()
	opt.MaxRetries = maxRetries
	c := redis.NewClient(opt)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// key returns a key under the test's prefix.
func (px *proxied) key(name string) string { return px.prefix + ":" + name }

// getInt reads an integer key straight from the server.
func (px *proxied) getInt(t *testing.T, key string) int {
	t.Helper()
	n, err := px.direct.Get(context.Background(), key).Int()
	if err != nil {
		t.Fatalf("GET %s on the server: %v", key, err)
	}
	return n
}

func TestProxyPassesTrafficThrough(t *testing.T) {
	px := newProxied(t)
	c := px.client(t, 0)
	ctx := context.Background()

	if got := px.proxy.URL(); got != "redis://"+px.proxy.Addr()+"/0" || !strings.HasPrefix(px.proxy.Addr(), "127.0.0.1:") {
		t.Errorf("URL() = %q, Addr() = %q", got, px.proxy.Addr())
	}

	t.Run("set and get", func(t *testing.T) {
		if err := c.Set(ctx, px.key("k"), "v", 0).Err(); err != nil {
			t.Fatalf("SET: %v", err)
		}
		if got, err := c.Get(ctx, px.key("k")).Result(); err != nil || got != "v" {
			t.Fatalf("GET = %q, %v; want v", got, err)
		}
		if err := c.Get(ctx, px.key("missing")).Err(); !errors.Is(err, redis.Nil) {
			t.Fatalf("GET of a missing key: %v, want redis.Nil", err)
		}
	})

	t.Run("pipeline of 100", func(t *testing.T) {
		cmds, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for range 100 {
				p.Incr(ctx, px.key("n"))
			}
			return nil
		})
		if err != nil {
			t.Fatalf("pipeline: %v", err)
		}
		for i, cmd := range cmds {
			if got := cmd.(*redis.IntCmd).Val(); got != int64(i+1) {
				t.Fatalf("reply %d = %d, want %d", i, got, i+1)
			}
		}
	})

	t.Run("1 MB value", func(t *testing.T) {
		big := make([]byte, 1<<20)
		for i := range big {
			big[i] = "ab\r\n$*+-_%~>|!=(#,:\x00"[i%20]
		}
		if err := c.Set(ctx, px.key("big"), big, 0).Err(); err != nil {
			t.Fatalf("SET: %v", err)
		}
		got, err := c.Get(ctx, px.key("big")).Bytes()
		if err != nil || !bytes.Equal(got, big) {
			t.Fatalf("GET: %d bytes (equal %v), %v", len(got), bytes.Equal(got, big), err)
		}
	})

	t.Run("script", func(t *testing.T) {
		// Unique source: on a shared server the script cache is shared too.
		s := redis.NewScript("-- " + px.prefix + "\nreturn redis.call('INCRBY', KEYS[1], ARGV[1])")
		for i, want := range []int64{5, 10} { // NOSCRIPT then EVAL, then EVALSHA
			if got, err := s.Run(ctx, c, []string{px.key("s")}, 5).Int64(); err != nil || got != want {
				t.Fatalf("run %d = %d, %v; want %d", i, got, err, want)
			}
		}
		if got, err := s.EvalSha(ctx, c, []string{px.key("s")}, 1).Int64(); err != nil || got != 11 {
			t.Fatalf("EVALSHA = %d, %v; want 11", got, err)
		}
	})

	t.Run("RESP3 types", func(t *testing.T) {
		if got, err := c.Do(ctx, "HELLO", "3").Result(); err != nil {
			t.Fatalf("HELLO 3: %v", err)
		} else if _, ok := got.(map[any]any); !ok {
			t.Fatalf("HELLO 3 = %T, want a map (RESP3)", got)
		}
		if err := c.HSet(ctx, px.key("h"), "a", "1", "b", "2").Err(); err != nil {
			t.Fatalf("HSET: %v", err)
		}
		if got, err := c.HGetAll(ctx, px.key("h")).Result(); err != nil || len(got) != 2 || got["b"] != "2" {
			t.Fatalf("HGETALL = %v, %v", got, err)
		}
		if err := c.SAdd(ctx, px.key("set"), "x", "y").Err(); err != nil {
			t.Fatalf("SADD: %v", err)
		}
		if got, err := c.SMembers(ctx, px.key("set")).Result(); err != nil || len(got) != 2 {
			t.Fatalf("SMEMBERS = %v, %v", got, err)
		}
		if err := c.ZAdd(ctx, px.key("z"), redis.Z{Score: 2.5, Member: "m"}).Err(); err != nil {
			t.Fatalf("ZADD: %v", err)
		}
		if got, err := c.ZScore(ctx, px.key("z"), "m").Result(); err != nil || got != 2.5 {
			t.Fatalf("ZSCORE = %v, %v", got, err)
		}
		for src, want := range map[string]any{
			"redis.setresp(3); return {double=3.5}":                                  3.5,
			"redis.setresp(3); return true":                                          true,
			"redis.setresp(3); return false":                                         false,
			"redis.setresp(3); return {map={a=1}}":                                   map[any]any{"a": int64(1)},
			"redis.setresp(3); return {verbatim_string={format='txt', string='hi'}}": "hi",
			"return {1, {2, 'three'}, redis.status_reply('OK')}":                     []any{int64(1), []any{int64(2), "three"}, "OK"},
		} {
			got, err := c.Eval(ctx, src, nil).Result()
			if err != nil || fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("EVAL %q = %#v, %v; want %#v", src, got, err, want)
			}
		}
		if err := c.Eval(ctx, "return redis.error_reply('MYERR boom')", nil).Err(); err == nil || err.Error() != "MYERR boom" {
			t.Errorf("error reply: %v, want MYERR boom", err)
		}
		if err := c.Eval(ctx, "redis.setresp(3); return redis.call('GET', KEYS[1])", []string{px.key("missing")}).Err(); !errors.Is(err, redis.Nil) {
			t.Errorf("RESP3 null: %v, want redis.Nil", err)
		}
	})

	t.Run("inline commands", func(t *testing.T) {
		conn := dial(t, px.proxy.Addr())
		handshake(t, conn, px.opt)
		write(t, conn, "\r\nPING\r\n  \r\nECHO hi\r\n*1\r\n$4\r\nPING\r\n*0\r\n")
		if got := readN(t, conn, len("+PONG\r\n$2\r\nhi\r\n+PONG\r\n")); got != "+PONG\r\n$2\r\nhi\r\n+PONG\r\n" {
			t.Fatalf("got %q", got)
		}
	})
}

func TestProxyDropReplyRetried(t *testing.T) {
	px := newProxied(t)
	c := px.client(t, 0) // go-redis's default: 3 retries
	ctx := context.Background()
	key := px.key("n")

	dropped := px.proxy.DropReply(redistest.IsCommand("INCR"))
	if got := dropped(); got != 0 {
		t.Fatalf("dropped() before = %d", got)
	}
	got, err := c.Incr(ctx, key).Result()
	if err != nil {
		t.Fatalf("INCR: %v", err)
	}
	// go-redis saw EOF after INCR ran, and sent it again: it ran twice.
	if got != 2 || px.getInt(t, key) != 2 {
		t.Fatalf("INCR = %d, value %d; want 2 and 2", got, px.getInt(t, key))
	}
	if got := dropped(); got != 1 {
		t.Fatalf("dropped() = %d, want 1", got)
	}
}

func TestProxyDropReplyNoRetries(t *testing.T) {
	px := newProxied(t)
	c := px.client(t, -1)
	ctx := context.Background()
	key := px.key("n")

	dropped := px.proxy.DropReply(redistest.IsCommand("incr")) // any case
	err := c.Incr(ctx, key).Err()
	if !errors.Is(err, io.EOF) {
		t.Fatalf("INCR: %v, want EOF", err)
	}
	if got := px.getInt(t, key); got != 1 {
		t.Fatalf("value %d, want 1: the command ran once, its reply was lost", got)
	}
	if got := dropped(); got != 1 {
		t.Fatalf("dropped() = %d, want 1", got)
	}
	// The client recovers on a new connection.
	if got, err := c.Incr(ctx, key).Result(); err != nil || got != 2 {
		t.Fatalf("INCR after = %d, %v; want 2", got, err)
	}
}

func TestProxyDropScriptReply(t *testing.T) {
	ctx := context.Background()
	const body = "\nreturn redis.call('INCR', KEYS[1])"

	t.Run("cached, retried", func(t *testing.T) {
		px := newProxied(t)
		c := px.client(t, 0)
		src := "-- " + px.prefix + body
		s := redis.NewScript(src)
		if err := s.Load(ctx, c).Err(); err != nil {
			t.Fatalf("SCRIPT LOAD: %v", err)
		}
		dropped := px.proxy.DropReply(redistest.IsScript(src))
		got, err := s.Run(ctx, c, []string{px.key("n")}).Int()
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		// EVALSHA ran, its reply was lost, go-redis sent EVALSHA again.
		if got != 2 || px.getInt(t, px.key("n")) != 2 || dropped() != 1 {
			t.Fatalf("Run = %d, value %d, dropped %d; want 2, 2, 1", got, px.getInt(t, px.key("n")), dropped())
		}
	})

	t.Run("cached, no retries", func(t *testing.T) {
		px := newProxied(t)
		c := px.client(t, -1)
		src := "-- " + px.prefix + body
		s := redis.NewScript(src)
		if err := s.Load(ctx, c).Err(); err != nil {
			t.Fatalf("SCRIPT LOAD: %v", err)
		}
		dropped := px.proxy.DropReply(redistest.IsScript(src))
		if err := s.Run(ctx, c, []string{px.key("n")}).Err(); !errors.Is(err, io.EOF) {
			t.Fatalf("Run: %v, want EOF (and no EVAL fallback)", err)
		}
		if got := px.getInt(t, px.key("n")); got != 1 || dropped() != 1 {
			t.Fatalf("value %d, dropped %d; want 1, 1", got, dropped())
		}
	})

	t.Run("not cached", func(t *testing.T) {
		// The first EVALSHA matches and fails NOSCRIPT: that error reply is
		// what is lost. go-redis retries EVALSHA (NOSCRIPT again, not
		// retried), then Run falls back to EVAL, which runs the script once.
		px := newProxied(t)
		c := px.client(t, 0)
		src := "-- " + px.prefix + body
		dropped := px.proxy.DropReply(redistest.IsScript(src))
		got, err := redis.NewScript(src).Run(ctx, c, []string{px.key("n")}).Int()
		if err != nil || got != 1 || px.getInt(t, px.key("n")) != 1 || dropped() != 1 {
			t.Fatalf("Run = %d, %v, value %d, dropped %d; want 1, nil, 1, 1", got, err, px.getInt(t, px.key("n")), dropped())
		}
	})

	t.Run("EVAL", func(t *testing.T) {
		px := newProxied(t)
		c := px.client(t, -1)
		src := "-- " + px.prefix + body
		dropped := px.proxy.DropReply(redistest.IsScript(src))
		if err := c.Eval(ctx, src, []string{px.key("n")}).Err(); !errors.Is(err, io.EOF) {
			t.Fatalf("EVAL: %v, want EOF", err)
		}
		if got := px.getInt(t, px.key("n")); got != 1 || dropped() != 1 {
			t.Fatalf("value %d, dropped %d; want 1, 1", got, dropped())
		}
	})
}

func TestProxyDropsOnlyFirstMatch(t *testing.T) {
	px := newProxied(t)
	c := px.client(t, -1)
	ctx := context.Background()
	key := px.key("n")

	first := px.proxy.DropReply(redistest.IsCommand("INCR"))
	if err := c.Incr(ctx, key).Err(); !errors.Is(err, io.EOF) {
		t.Fatalf("first INCR: %v, want EOF", err)
	}
	for want := int64(2); want <= 4; want++ {
		if got, err := c.Incr(ctx, key).Result(); err != nil || got != want {
			t.Fatalf("INCR = %d, %v; want %d", got, err, want)
		}
	}
	if got := first(); got != 1 {
		t.Fatalf("first dropped() = %d, want 1", got)
	}

	// Arming again drops one more; a replaced arm never fires.
	replaced := px.proxy.DropReply(redistest.IsCommand("GET"))
	second := px.proxy.DropReply(redistest.IsCommand("INCR"))
	if err := c.Get(ctx, key).Err(); err != nil {
		t.Fatalf("GET: %v", err)
	}
	if err := c.Incr(ctx, key).Err(); !errors.Is(err, io.EOF) {
		t.Fatalf("INCR after the second DropReply: %v, want EOF", err)
	}
	if got := px.getInt(t, key); got != 5 || first() != 1 || second() != 1 || replaced() != 0 {
		t.Fatalf("value %d, dropped first %d second %d replaced %d; want 5, 1, 1, 0",
			got, first(), second(), replaced())
	}
}

func TestProxyDropReplyInPipeline(t *testing.T) {
	ctx := context.Background()

	t.Run("raw", func(t *testing.T) {
		// Replies before the dropped one arrive; commands after it never
		// reach Redis.
		px := newProxied(t)
		conn := dial(t, px.proxy.Addr())
		handshake(t, conn, px.opt)
		dropped := px.proxy.DropReply(redistest.IsCommand("INCR"))
		write(t, conn, encode("SET", px.key("a"), "1")+encode("INCR", px.key("n"))+encode("SET", px.key("b"), "2"))
		got, err := io.ReadAll(conn)
		if err != nil || string(got) != "+OK\r\n" {
			t.Fatalf("read %q, %v; want +OK then EOF", got, err)
		}
		if got := px.getInt(t, px.key("n")); got != 1 || dropped() != 1 {
			t.Fatalf("value %d, dropped %d; want 1, 1", got, dropped())
		}
		if n, err := px.direct.Exists(ctx, px.key("a"), px.key("b")).Result(); err != nil || n != 1 {
			t.Fatalf("EXISTS a b = %d, %v; want 1 (a only)", n, err)
		}
	})

	t.Run("go-redis", func(t *testing.T) {
		// go-redis sends the whole pipeline again after the read error.
		px := newProxied(t)
		c := px.client(t, 0)
		dropped := px.proxy.DropReply(redistest.IsCommand("INCR"))
		var incr *redis.IntCmd
		_, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
			p.Set(ctx, px.key("a"), "1", 0)
			incr = p.Incr(ctx, px.key("n"))
			p.Set(ctx, px.key("b"), "2", 0)
			return nil
		})
		if err != nil || incr.Val() != 2 || px.getInt(t, px.key("n")) != 2 || dropped() != 1 {
			t.Fatalf("pipeline: %v, INCR = %d, value %d, dropped %d; want nil, 2, 2, 1",
				err, incr.Val(), px.getInt(t, px.key("n")), dropped())
		}
	})
}

// frame is one RESP value a fake server sends.
type frame struct {
	raw  string
	push bool // out of band: no reply to a command
}

// resp3Frames holds one of every RESP2 and RESP3 type, nested, with
// attributes, pushes between replies, streamed strings and aggregates, and
// values larger than the proxy's buffers.
var resp3Frames = []frame{
	{raw: "+OK\r\n"},
	{raw: "-ERR bad\r\n"},
	{raw: ":-42\r\n"},
	{raw: "$5\r\nhe\r\no\r\n"},
	{raw: "$0\r\n\r\n"},
	{raw: "$-1\r\n"},
	{raw: "*-1\r\n"},
	{raw: "*0\r\n"},
	{raw: "_\r\n"},
	{raw: ">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\nhello\r\n", push: true},
	{raw: "#t\r\n"},
	{raw: ",3.14\r\n"},
	{raw: ",-inf\r\n"},
	{raw: "(3492890328409238509324850943850943825024385\r\n"},
	{raw: "=15\r\ntxt:Some string\r\n"},
	{raw: "!21\r\nSYNTAX invalid syntax\r\n"},
	{raw: ">2\r\n+a\r\n+b\r\n", push: true},
	{raw: ">1\r\n+c\r\n", push: true},
	{raw: "%2\r\n+first\r\n:1\r\n+second\r\n*2\r\n:2\r\n~1\r\n_\r\n"},
	{raw: "~3\r\n+a\r\n:1\r\n,2.5\r\n"},
	{raw: "|1\r\n+key-popularity\r\n%2\r\n$1\r\na\r\n,0.1923\r\n$1\r\nb\r\n,0.0012\r\n*2\r\n:2039123\r\n:9543892\r\n"},
	{raw: "*3\r\n*2\r\n+nested\r\n%1\r\n+k\r\n~1\r\n_\r\n|1\r\n+attr\r\n+v\r\n:7\r\n$3\r\nend\r\n"},
	{raw: "|1\r\n+a\r\n+b\r\n>1\r\n+attributed push\r\n", push: true},
	{raw: "$?\r\n;4\r\nHell\r\n;5\r\no wor\r\n;1\r\nd\r\n;0\r\n"},
	{raw: "*?\r\n:1\r\n*?\r\n+x\r\n.\r\n.\r\n"},
	{raw: "%?\r\n+a\r\n:1\r\n.\r\n"},
	{raw: "$200000\r\n" + strings.Repeat("x\r\n$", 50000) + "\r\n"},
	{raw: "+" + strings.Repeat("y", 100000) + "\r\n"},
	{raw: "*3\r\n$70000\r\n" + strings.Repeat("z", 70000) + "\r\n:1\r\n$1\r\nq\r\n"},
	{raw: ">1\r\n+trailing push\r\n", push: true},
}

// fakeServer serves one connection with resp3Frames: for each command it
// reads it sends the pushes before the next reply and the reply (small
// frames a byte at a time, to split them across reads), and after the last
// reply the pushes after it. It reports how many commands it read once the
// connection ends.
func fakeServer(t *testing.T) (addr string, commands <-chan int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	ch := make(chan int, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			ch <- -1
			return
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
		r := bufio.NewReader(conn)
		next, n := 0, 0
		send := func(f frame) {
			if len(f.raw) > 256 {
				_, _ = io.WriteString(conn, f.raw)
				return
			}
			for i := range len(f.raw) {
				_, _ = conn.Write([]byte{f.raw[i]})
			}
		}
		for {
			// Commands are "*1\r\n$N\r\nNAME\r\n".
			var err error
			for range 3 {
				if _, err = r.ReadString('\n'); err != nil {
					break
				}
			}
			if err != nil {
				ch <- n
				return
			}
			n++
			for next < len(resp3Frames) {
				f := resp3Frames[next]
				next++
				send(f)
				if !f.push {
					break
				}
			}
			if replies(resp3Frames[next:]) == 0 {
				for ; next < len(resp3Frames); next++ {
					send(resp3Frames[next])
				}
			}
		}
	}()
	return ln.Addr().String(), ch
}

// replies counts the frames that are replies to commands.
func replies(frames []frame) int {
	n := 0
	for _, f := range frames {
		if !f.push {
			n++
		}
	}
	return n
}

func TestProxyRESP3Frames(t *testing.T) {
	n := replies(resp3Frames)
	commands := func(drop int) string {
		var b strings.Builder
		for i := range n {
			if i == drop {
				b.WriteString(encode("DROPME"))
			} else {
				b.WriteString(encode("PING"))
			}
		}
		return b.String()
	}

	t.Run("all pass", func(t *testing.T) {
		addr, got := fakeServer(t)
		p := redistest.NewProxy(t, addr)
		conn := dial(t, p.Addr())
		write(t, conn, commands(-1))
		var want strings.Builder
		for _, f := range resp3Frames {
			want.WriteString(f.raw)
		}
		if got := readN(t, conn, want.Len()); got != want.String() {
			t.Fatalf("got %d bytes, want %d: not the same", len(got), want.Len())
		}
		_ = conn.Close()
		if c := <-got; c != n {
			t.Fatalf("the server read %d commands, want %d", c, n)
		}
	})

	for drop := range n {
		t.Run(fmt.Sprintf("drop reply %d", drop), func(t *testing.T) {
			addr, got := fakeServer(t)
			p := redistest.NewProxy(t, addr)
			dropped := p.DropReply(redistest.IsCommand("DROPME"))
			conn := dial(t, p.Addr())
			write(t, conn, commands(drop))
			var want strings.Builder
			for i, r := 0, 0; ; i++ {
				if !resp3Frames[i].push {
					if r == drop {
						break
					}
					r++
				}
				want.WriteString(resp3Frames[i].raw)
			}
			b, err := io.ReadAll(conn)
			if err != nil || string(b) != want.String() {
				t.Fatalf("got %d bytes, %v; want %d then EOF (equal: %v)", len(b), err, want.Len(), string(b) == want.String())
			}
			if c := <-got; c != drop+1 {
				t.Fatalf("the server read %d commands, want %d (none after the dropped one)", c, drop+1)
			}
			if dropped() != 1 {
				t.Fatalf("dropped() = %d", dropped())
			}
		})
	}
}

func TestProxyMatchers(t *testing.T) {
	src := "return 1"
	sha := "e0e1f9fabfc9d4800c877a703b823ac0578ff8db" // sha1("return 1")
	args := func(a ...string) [][]byte {
		b := make([][]byte, len(a))
		for i := range a {
			b[i] = []byte(a[i])
		}
		return b
	}
	script := redistest.IsScript(src)
	for _, tc := range []struct {
		args []string
		want bool
	}{
		{[]string{"evalsha", sha, "0"}, true},
		{[]string{"EVALSHA", strings.ToUpper(sha), "0"}, true},
		{[]string{"evalsha_ro", sha, "0"}, true},
		{[]string{"eval", src, "0"}, true},
		{[]string{"EVAL_RO", src, "0"}, true},
		{[]string{"eval", "return 2", "0"}, false},
		{[]string{"evalsha", strings.Repeat("0", 40), "0"}, false},
		{[]string{"get", src}, false},
		{[]string{"eval"}, false},
		{nil, false},
	} {
		if got := script(args(tc.args...)); got != tc.want {
			t.Errorf("IsScript(%q)(%q) = %v, want %v", src, tc.args, got, tc.want)
		}
	}
	if sum := redis.NewScript(src).Hash(); sum != sha {
		t.Fatalf("sha1 %s, go-redis says %s", sha, sum)
	}
	incr := redistest.IsCommand("INCR")
	if !incr(args("incr", "k")) || !incr(args("InCr")) || incr(args("incrby", "k", "1")) || incr(nil) {
		t.Error("IsCommand(INCR) matches wrongly")
	}
}

func TestProxyCleanupLeavesNoGoroutines(t *testing.T) {
	url, _ := redistest.Start(t)
	opt, err := redis.ParseURL(url)
	if err != nil {
		t.Fatalf("parse %s: %v", url, err)
	}
	prefix := redistest.Prefix(t)
	ctx := context.Background()
	before := runtime.NumGoroutine()
	var held []net.Conn
	t.Run("use", func(t *testing.T) {
		p := redistest.NewProxy(t, opt.Addr)
		o := *opt
		o.Addr = p.Addr()
		c := redis.NewClient(&o)
		t.Cleanup(func() { _ = c.Close() })
		dropped := p.DropReply(redistest.IsCommand("INCR"))
		if err := c.Incr(ctx, prefix+":n").Err(); err != nil || dropped() != 1 {
			t.Fatalf("INCR: %v, dropped %d", err, dropped())
		}
		// Connections the proxy must close: an idle one, one blocked on
		// BLPOP, one waiting for a reply that is to be dropped.
		// (Dialled without dial, whose t.Cleanup would close them first.)
		for range 3 {
			conn, err := net.DialTimeout("tcp", p.Addr(), time.Second)
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
			held = append(held, conn)
			handshake(t, conn, opt)
		}
		idle, blocked, waiting := held[0], held[1], held[2]
		write(t, idle, "PING\r\n")
		readN(t, idle, len("+PONG\r\n"))
		write(t, blocked, encode("BLPOP", prefix+":list", "0"))
		p.DropReply(redistest.IsCommand("BLPOP"))
		write(t, waiting, encode("BLPOP", prefix+":list2", "0"))
		time.Sleep(50 * time.Millisecond) // let the commands reach Redis
	})
	defer func() {
		for _, c := range held {
			_ = c.Close()
		}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines after Cleanup, %d before:\n%s",
				runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, c := range held {
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Errorf("a connection through the proxy is still open after Cleanup")
		}
	}
}

// dial connects to addr; the connection is closed in t.Cleanup and times
// out after 10 s.
func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	return conn
}

// handshake sends conn the AUTH and SELECT that opt (the server's URL) asks
// for, as REDIS_URL may name a server with a password or another database.
func handshake(t *testing.T, conn net.Conn, opt *redis.Options) {
	t.Helper()
	var cmds []string
	if opt.Password != "" {
		if opt.Username != "" {
			cmds = append(cmds, encode("AUTH", opt.Username, opt.Password))
		} else {
			cmds = append(cmds, encode("AUTH", opt.Password))
		}
	}
	if opt.DB != 0 {
		cmds = append(cmds, encode("SELECT", strconv.Itoa(opt.DB)))
	}
	for _, cmd := range cmds {
		write(t, conn, cmd)
		if got := readN(t, conn, len("+OK\r\n")); got != "+OK\r\n" {
			t.Fatalf("handshake: %q", got)
		}
	}
}

func write(t *testing.T, conn net.Conn, s string) {
	t.Helper()
	if _, err := io.WriteString(conn, s); err != nil {
		t.Fatalf("write: %v", err)
	}
}

func readN(t *testing.T, conn net.Conn, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := io.ReadFull(conn, b); err != nil {
		t.Fatalf("read %d bytes: %v (got %q)", n, err, b)
	}
	return string(b)
}

// encode writes args as a RESP array of bulk strings.
func encode(args ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	return b.String()
}
