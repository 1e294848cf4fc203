package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// The load loop is a minimal HTTP/1.1 keep-alive client over raw connections,
// one goroutine per connection (closed loop, like wrk): on two shared cores
// every microsecond the generator spends is taken from the server under test,
// and net/http's client costs several times more per request than this.

var (
	body        = []byte(`{"refresh":false}`)
	wantToken   = []byte(`"access_token":"wyu_`)
	hdrLength   = []byte("content-length:")
	hdrEncoding = []byte("transfer-encoding:")
	hdrConn     = []byte("connection:")
)

// loader sends POST /resolvers/token, each request with the next FIT of the pool.
type loader struct {
	addr      string
	fits      []string
	appTokens []string // per FIT's installation; nil: no x-forge-oauth-system header
	installOf []int    // FIT index → installation index
	timeout   time.Duration
	next      atomic.Uint64
}

// phaseStats is what one phase of load measured.
type phaseStats struct {
	Requests  int64 // answered, whatever the status
	Non2xx    int64
	BadBody   int64 // 2xx without a wyu_ access token
	Errors    int64 // transport errors (each followed by a reconnect)
	Elapsed   time.Duration
	Hist      hist
	FirstErr  string
	StatusSet map[int]int64
}

type conn struct {
	c    net.Conn
	r    *bufio.Reader
	w    []byte
	body []byte
}

func (l *loader) dial() (*conn, error) {
	c, err := net.DialTimeout("tcp", l.addr, l.timeout)
	if err != nil {
		return nil, err
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	return &conn{c: c, r: bufio.NewReaderSize(c, 16<<10), w: make([]byte, 0, 4096), body: make([]byte, 0, 1024)}, nil
}

// run drives load on conns until d has passed or ctx ends. Each connection is
// used by one goroutine; a broken one is replaced in place.
func (l *loader) run(ctx context.Context, conns []*conn, d time.Duration) phaseStats {
	start := time.Now()
	deadline := start.Add(d)
	results := make([]phaseStats, len(conns))
	var wg sync.WaitGroup
	for w := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st := &results[w]
			for ctx.Err() == nil {
				t0 := time.Now()
				if !t0.Before(deadline) {
					return
				}
				cn := conns[w]
				if cn == nil {
					var err error
					if cn, err = l.dial(); err != nil {
						st.recordErr(err)
						time.Sleep(10 * time.Millisecond)
						continue
					}
					conns[w] = cn
				}
				i := int(l.next.Add(1)-1) % len(l.fits)
				status, ok, keep, err := l.do(cn, i)
				if err != nil {
					st.recordErr(err)
					cn.c.Close()
					conns[w] = nil
					continue
				}
				st.Hist.record(time.Since(t0))
				st.Requests++
				switch {
				case status < 200 || status > 299:
					st.Non2xx++
					if st.StatusSet == nil {
						st.StatusSet = map[int]int64{}
					}
					st.StatusSet[status]++
				case !ok:
					st.BadBody++
				}
				if !keep {
					cn.c.Close()
					conns[w] = nil
				}
			}
		}()
	}
	wg.Wait()
	var total phaseStats
	total.Elapsed = time.Since(start)
	for i := range results {
		total.merge(&results[i])
	}
	return total
}

func (s *phaseStats) recordErr(err error) {
	s.Errors++
	if s.FirstErr == "" {
		s.FirstErr = err.Error()
	}
}

func (s *phaseStats) merge(o *phaseStats) {
	s.Requests += o.Requests
	s.Non2xx += o.Non2xx
	s.BadBody += o.BadBody
	s.Errors += o.Errors
	if s.FirstErr == "" {
		s.FirstErr = o.FirstErr
	}
	for k, v := range o.StatusSet {
		if s.StatusSet == nil {
			s.StatusSet = map[int]int64{}
		}
		s.StatusSet[k] += v
	}
	s.Hist.merge(&o.Hist)
}

// do sends request i on cn and reads the whole answer: its status, whether a
// 2xx body carries a wyu_ token, and whether the connection may be reused.
func (l *loader) do(cn *conn, i int) (status int, ok, keep bool, err error) {
	w := cn.w[:0]
	w = append(w, "POST /resolvers/token HTTP/1.1\r\nHost: "...)
	w = append(w, l.addr...)
	w = append(w, "\r\nAuthorization: Bearer "...)
	w = append(w, l.fits[i]...)
	w = append(w, "\r\nContent-Type: application/json\r\nUser-Agent: forge-bench\r\nx-b3-traceid: "...)
	w = appendHex16(w, uint64(i)|1<<63)
	w = append(w, "\r\nx-b3-spanid: "...)
	w = appendHex16(w, uint64(i)|1<<62)
	if l.appTokens != nil {
		w = append(w, "\r\nx-forge-oauth-system: "...)
		w = append(w, l.appTokens[l.installOf[i]]...)
	}
	w = append(w, "\r\nContent-Length: "...)
	w = strconv.AppendInt(w, int64(len(body)), 10)
	w = append(w, "\r\n\r\n"...)
	w = append(w, body...)
	cn.w = w
	return l.exchange(cn)
}

// exchange sends the request in cn.w and reads the whole answer into cn.body:
// its status, whether a 2xx body carries a wyu_ token, and whether the
// connection may be reused.
func (l *loader) exchange(cn *conn) (status int, ok, keep bool, err error) {
	w := cn.w
	_ = cn.c.SetDeadline(time.Now().Add(l.timeout))
	if _, err = cn.c.Write(w); err != nil {
		return 0, false, false, err
	}
	line, err := cn.r.ReadSlice('\n')
	if err != nil {
		return 0, false, false, err
	}
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return 0, false, false, fmt.Errorf("bad status line %q", line)
	}
	if status, err = strconv.Atoi(string(line[9:12])); err != nil {
		return 0, false, false, fmt.Errorf("bad status line %q", line)
	}
	keep = line[7] == '1' // HTTP/1.1 keeps the connection unless told otherwise
	length, chunked := -1, false
	for {
		h, err := cn.r.ReadSlice('\n')
		if err != nil {
			return 0, false, false, err
		}
		h = bytes.TrimRight(h, "\r\n")
		if len(h) == 0 {
			break
		}
		switch {
		case hasPrefixFold(h, hdrLength):
			if length, err = strconv.Atoi(string(bytes.TrimSpace(h[len(hdrLength):]))); err != nil {
				return 0, false, false, fmt.Errorf("bad content-length %q", h)
			}
		case hasPrefixFold(h, hdrEncoding):
			chunked = bytes.Contains(bytes.ToLower(h), []byte("chunked"))
		case hasPrefixFold(h, hdrConn):
			v := bytes.ToLower(h[len(hdrConn):])
			if bytes.Contains(v, []byte("close")) {
				keep = false
			} else if bytes.Contains(v, []byte("keep-alive")) {
				keep = true
			}
		}
	}
	b := cn.body[:0]
	switch {
	case chunked:
		if b, err = readChunked(cn.r, b); err != nil {
			return 0, false, false, err
		}
	case length >= 0:
		if cap(b) < length {
			b = make([]byte, length)
		}
		b = b[:length]
		if _, err = io.ReadFull(cn.r, b); err != nil {
			return 0, false, false, err
		}
	case status == 204 || status == 304:
	default:
		return 0, false, false, errors.New("answer without length: cannot keep the connection")
	}
	cn.body = b
	return status, bytes.Contains(b, wantToken), keep, nil
}

func readChunked(r *bufio.Reader, b []byte) ([]byte, error) {
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return nil, err
		}
		sz := bytes.TrimSpace(line)
		if j := bytes.IndexByte(sz, ';'); j >= 0 {
			sz = sz[:j]
		}
		n, err := strconv.ParseInt(string(sz), 16, 32)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("bad chunk size %q", line)
		}
		if n == 0 {
			for { // trailers until the blank line
				t, err := r.ReadSlice('\n')
				if err != nil {
					return nil, err
				}
				if len(bytes.TrimRight(t, "\r\n")) == 0 {
					return b, nil
				}
			}
		}
		off := len(b)
		b = append(b, make([]byte, n)...)
		if _, err := io.ReadFull(r, b[off:]); err != nil {
			return nil, err
		}
		if _, err := r.Discard(2); err != nil { // CRLF
			return nil, err
		}
	}
}

func hasPrefixFold(s, prefix []byte) bool {
	return len(s) >= len(prefix) && bytes.EqualFold(s[:len(prefix)], prefix)
}

func appendHex16(b []byte, v uint64) []byte {
	const digits = "0123456789abcdef"
	for s := 60; s >= 0; s -= 4 {
		b = append(b, digits[v>>uint(s)&0xf])
	}
	return b
}

// hist is a log-linear latency histogram (HDR-like): exact below 256 ns, then
// 128 buckets per power of two, so any quantile is within 0.8 %.
type hist struct {
	counts [histBuckets]int64
	n      int64
	max    int64
}

const (
	histSub     = 128
	histBuckets = 2*histSub + 40*histSub
)

func histIndex(v int64) int {
	if v < 2*histSub {
		return int(v)
	}
	e := bits.Len64(uint64(v)) - 8 // v>>e is in [128, 256)
	i := 2*histSub + (e-1)*histSub + int(v>>uint(e)) - histSub
	return min(i, histBuckets-1)
}

// histValue is the middle of bucket i.
func histValue(i int) int64 {
	if i < 2*histSub {
		return int64(i)
	}
	e := (i-2*histSub)/histSub + 1
	m := int64((i-2*histSub)%histSub + histSub)
	return m<<uint(e) + (int64(1)<<uint(e))/2
}

func (h *hist) record(d time.Duration) {
	v := int64(d)
	h.counts[histIndex(v)]++
	h.n++
	h.max = max(h.max, v)
}

func (h *hist) merge(o *hist) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.max = max(h.max, o.max)
}

// quantile q in [0,1] as a duration; 0 when empty.
func (h *hist) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := int64(q*float64(h.n) + 0.5)
	rank = min(max(rank, 1), h.n)
	var seen int64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return time.Duration(min(histValue(i), h.max))
		}
	}
	return time.Duration(h.max)
}
