// Command floor is the HTTP floor of bench/load: the cost of the HTTP stack
// alone (net/http + Gin) on the load tool's requests, measured by
// `go run ./bench/load -compare` as a third server named http-floor.
//
// It answers POST /resolvers/token with a constant, token-shaped body after
// reading the request to its end, and does nothing else: no FIT verification,
// no header parsing beyond net/http's, no store, no Weavy, no logging, no
// middleware. What it costs per request is what any server built on net/http
// and Gin pays for the same requests (a ~1.3 KB FIT in Authorization, a ~1 KB
// x-forge-oauth-system header, a 17-byte JSON body) before doing any work of
// its own; "HTTP floor + bare RS256 verify" is then the least such a server
// can reach.
//
// bench/load runs it with the image's GOGC and GOMEMLIMIT (the Dockerfile's
// ENV), like forge-remote, so that the two compare like for like.
//
// It is a measuring instrument, not a server anyone should run: it hands
// every caller the same fake token without checking anything.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/forge-remote/forge-remote/internal/httplimits"
)

// answer is shaped like forge-remote's token answer (resolvers.TokenAnswer,
// with a token as long as weavysim's), so the write side costs the same.
var answer = []byte(`{"access_token":"wyu_1700000000000000000_12345","expires_in":3600}`)

const contentType = "application/json; charset=utf-8"

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(1)
	}
}

func run() error {
	addr := os.Getenv("LISTEN_ADDR")
	if addr == "" {
		return errors.New("LISTEN_ADDR is not set")
	}
	gin.SetMode(gin.ReleaseMode)
	r := gin.New() // no middleware: no logger, no recovery
	r.GET("/readyz", func(c *gin.Context) { c.Status(http.StatusOK) })
	r.POST("/resolvers/token", func(c *gin.Context) {
		_, _ = io.Copy(io.Discard, c.Request.Body)
		c.Data(http.StatusOK, contentType, answer)
	})
	srv := &http.Server{
		Addr:              addr,
		Handler:           r,
		ReadHeaderTimeout: httplimits.ReadHeaderTimeout,
		ReadTimeout:       httplimits.ReadTimeout,
		WriteTimeout:      httplimits.WriteTimeout,
		IdleTimeout:       httplimits.IdleTimeout,
		MaxHeaderBytes:    httplimits.MaxHeaderBytes, // forge-remote's limits
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}
