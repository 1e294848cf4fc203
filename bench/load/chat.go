package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/forge-remote/forge-remote/devmode/confluencesim"
	"github.com/forge-remote/forge-remote/forge/forgetest"
)

// Page chats: with -chats N, forge-remote's run opens N distinct page chats
// after the token warm-up and before the load, chat i by user i mod -users
// on that user's site, page chatPage(i). Each is POST /resolvers/chat with
// the user's FIT, the user's x-forge-oauth-user token and {"contentId":…}:
// the chat resolver asks Confluence, as the user, whether they can view the
// page, then opens its chat (provisioning the app in Weavy, adding the member,
// putting the user in the site's directory). Confluence is simulated in this
// process (devmode/confluencesim, every numeric id a page everyone can view),
// so that it does not count in the server's RSS.
//
// The FITs name no content (a global page's, or an app's that opted into
// Forge's trusted-only context): the body names the page, which the resolver
// checks with Confluence like the FIT's. Their apiBaseUrl is the simulator's
// loopback address, so they are signed for the port the simulator listens on,
// one per user, cached in -cache with that port; a later run listens on the
// same port when it is free and reuses them.

// chatPage is the content id of chat i: distinct for every i.
func chatPage(i int) string { return strconv.Itoa(1_000_000 + i) }

// benchUserToken is user's x-forge-oauth-user token: the simulator reads the
// accountId back from it (confluencesim.Options.UserTokens).
const userTokenPrefix = "bench-user-token."

func benchUserToken(user int) string { return userTokenPrefix + accountID(user) }

func checkUserToken(tok string) (string, time.Time, bool) {
	id, ok := strings.CutPrefix(tok, userTokenPrefix)
	return id, time.Now().Add(time.Hour), ok && id != ""
}

// chatFITs is the chat calls' FIT per user, signed for apiBase.
type chatFITs struct {
	Header chatHeader
	FITs   []string // user i's
}

type chatHeader struct {
	poolHeader
	APIBase string `json:"api_base"` // the simulator's root the FITs' apiBaseUrl names
}

// confluence is the simulated Confluence the chat calls' FITs point at.
type confluence struct {
	sim  *confluencesim.Server
	fits *chatFITs
}

// startConfluence starts the simulator, on the address the cached chat FITs
// name when it is free, and loads or signs the FITs for its address.
func startConfluence(dir string, s *signer, users, installs int, now time.Time, log io.Writer) (*confluence, error) {
	path := filepath.Join(dir, fmt.Sprintf("chat-fits-u%d-i%d.txt", users, installs))
	cached, _ := readChatFITs(path)
	var ln net.Listener
	if cached != nil {
		if addr, ok := strings.CutPrefix(cached.Header.APIBase, "http://"); ok {
			ln, _ = net.Listen("tcp", addr)
		}
	}
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			return nil, err
		}
	}
	sim := confluencesim.New(ln, confluencesim.Options{AnyContent: true, UserTokens: checkUserToken})
	c := &confluence{sim: sim}
	if h := cached.header(); h.Version == poolVersion && h.Kid == s.kid && h.AppID == forgetest.AppID &&
		h.Users == users && h.Installs == installs && h.APIBase == sim.URL() && time.Unix(h.Exp, 0).After(now.Add(poolMinLeft)) {
		c.fits = cached
		return c, nil
	}
	fmt.Fprintf(log, "signing %d chat FITs for %s (cached in %s)…\n", users, sim.URL(), dir)
	start := time.Now()
	iat := now.Add(-time.Minute)
	f := &chatFITs{Header: chatHeader{poolHeader{Version: poolVersion, Kid: s.kid, AppID: forgetest.AppID, Users: users,
		Installs: installs, N: users, IssuedAt: iat.Unix(), Exp: iat.Add(poolLifetime).Unix()}, sim.URL()}}
	f.FITs = make([]string, users)
	err := parallel(users, func(u int) error {
		fit, err := signChatFIT(s, f.Header, u, installOf(u, installs))
		f.FITs[u] = fit
		return err
	})
	if err != nil {
		sim.Close()
		return nil, err
	}
	fmt.Fprintf(log, "signed in %s\n", time.Since(start).Round(time.Millisecond))
	if err := writeChatFITs(path, f); err != nil {
		sim.Close()
		return nil, err
	}
	c.fits = f
	return c, nil
}

func (c *confluence) close() { c.sim.Close() }

func (f *chatFITs) header() chatHeader {
	if f == nil {
		return chatHeader{}
	}
	return f.Header
}

// signChatFIT signs user's FIT for the chat calls: the token pool's claims,
// but the apiBaseUrl of the simulated site and no content in the context.
func signChatFIT(s *signer, h chatHeader, user, install int) (string, error) {
	inst, cloud := installationID(install), cloudID(install)
	apiBase := h.APIBase + "/ex/confluence/" + cloud
	claims := jwt.MapClaims{
		"iss": forgetest.FITIssuer, "aud": h.AppID, "iat": h.IssuedAt, "nbf": h.IssuedAt, "exp": h.Exp,
		"jti": randomUUID(),
		"app": map[string]any{
			"id": h.AppID, "installationId": inst, "apiBaseUrl": apiBase, "appVersion": forgetest.AppVersion,
			"environment": map[string]any{"type": "DEVELOPMENT", "id": forgetest.EnvironmentID},
			"module":      map[string]any{"type": "xen:macro", "key": forgetest.ModuleKey},
			"installation": map[string]any{"id": inst, "contexts": []any{map[string]any{
				"name": "ari:cloud:confluence::site/" + cloud, "apiBaseUrl": apiBase, "cloudId": cloud,
			}}},
		},
		"principal": accountID(user),
		"context": map[string]any{
			"cloudId": cloud, "moduleKey": forgetest.ModuleKey, "siteUrl": forgetest.SiteURL,
			"localId": "6a1e7c52-3b9d-4f80-a2c4-9d8e7f6a5b4c", "accountId": accountID(user),
			"extension": map[string]any{"type": "macro"},
		},
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	tok.Header["kid"] = s.kid
	return tok.SignedString(s.key)
}

// The cache file: a JSON header line, then one FIT a line, user 0 first.
func writeChatFITs(path string, f *chatFITs) error {
	var b bytes.Buffer
	hdr, _ := json.Marshal(f.Header)
	b.Write(hdr)
	b.WriteByte('\n')
	for _, fit := range f.FITs {
		b.WriteString(fit)
		b.WriteByte('\n')
	}
	return writeAtomic(path, b.Bytes(), 0o600)
}

func readChatFITs(path string) (*chatFITs, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(lines) == 0 {
		return nil, errors.New("empty chat FIT file")
	}
	f := new(chatFITs)
	if err := json.Unmarshal([]byte(lines[0]), &f.Header); err != nil {
		return nil, err
	}
	f.FITs = lines[1:]
	if len(f.FITs) != f.Header.N {
		return nil, errors.New("truncated chat FIT file")
	}
	return f, nil
}

// chatStats is what the chat phase measured.
type chatStats struct {
	Opens    int64 // answered 2xx with an app id
	Errors   int64 // anything else
	FirstErr string
	Elapsed  time.Duration
}

// openChats opens chats 0..n-1 on conns connections; chat i by user i mod
// users, with users' chat FITs and tokens. It stops at the first failure.
func (l *loader) openChats(ctx context.Context, conns, n, users, installs int, fits []string) chatStats {
	start := time.Now()
	var next, opens, errs atomic.Int64
	var mu sync.Mutex
	var first string
	fail := func(err error) {
		errs.Add(1)
		mu.Lock()
		if first == "" {
			first = err.Error()
		}
		mu.Unlock()
	}
	var wg sync.WaitGroup
	for range min(conns, n) {
		wg.Go(func() {
			var cn *conn
			defer func() {
				if cn != nil {
					cn.c.Close()
				}
			}()
			for ctx.Err() == nil && errs.Load() == 0 {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				var err error
				if cn == nil {
					if cn, err = l.dial(); err != nil {
						fail(err)
						return
					}
				}
				u := i % users
				status, keep, err := l.doChat(cn, fits[u], benchUserToken(u), installOf(u, installs), chatPage(i))
				switch {
				case err != nil:
				case status < 200 || status > 299:
					err = fmt.Errorf("chat %d (user %d) answered %d: %s", i, u, status, cn.body)
				case !bytes.Contains(cn.body, wantAppID):
					err = fmt.Errorf("chat %d: no app_id in %s", i, cn.body)
				}
				if err != nil {
					fail(err)
					return
				}
				opens.Add(1)
				if !keep {
					cn.c.Close()
					cn = nil
				}
			}
		})
	}
	wg.Wait()
	st := chatStats{Opens: opens.Load(), Errors: errs.Load(), FirstErr: first, Elapsed: time.Since(start)}
	if st.FirstErr == "" && ctx.Err() != nil {
		st.FirstErr = ctx.Err().Error()
	}
	return st
}

var wantAppID = []byte(`"app_id":`)

// doChat sends one chat open on cn and reads the whole answer into cn.body.
func (l *loader) doChat(cn *conn, fit, userToken string, install int, page string) (status int, keep bool, err error) {
	body := `{"contentId":"` + page + `"}`
	w := cn.w[:0]
	w = append(w, "POST /resolvers/chat HTTP/1.1\r\nHost: "...)
	w = append(w, l.addr...)
	w = append(w, "\r\nAuthorization: Bearer "...)
	w = append(w, fit...)
	w = append(w, "\r\nContent-Type: application/json\r\nUser-Agent: forge-bench\r\nx-forge-oauth-user: "...)
	w = append(w, userToken...)
	if l.appTokens != nil {
		w = append(w, "\r\nx-forge-oauth-system: "...)
		w = append(w, l.appTokens[install]...)
	}
	w = append(w, "\r\nContent-Length: "...)
	w = strconv.AppendInt(w, int64(len(body)), 10)
	w = append(w, "\r\n\r\n"...)
	w = append(w, body...)
	cn.w = w
	status, _, keep, err = l.exchange(cn)
	return status, keep, err
}

// parallel runs fn(0..n-1) on GOMAXPROCS goroutines and joins their errors
// (each goroutine stops at its first).
func parallel(n int, fn func(i int) error) error {
	workers := runtime.GOMAXPROCS(0)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				if err := fn(i); err != nil {
					errs[w] = err
					return
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}
