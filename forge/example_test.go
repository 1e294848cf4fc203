package forge_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/forge-remote/forge-remote/forge"
	"github.com/forge-remote/forge-remote/forge/forgetest"
)

// exampleT stands in for the *testing.T that forgetest takes in a test: an
// Example has none.
type exampleT struct {
	testing.TB
	cleanups []func()
}

func (*exampleT) Helper()                           {}
func (*exampleT) Fatal(args ...any)                 { panic(fmt.Sprint(args...)) }
func (*exampleT) Fatalf(format string, args ...any) { panic(fmt.Sprintf(format, args...)) }
func (t *exampleT) Cleanup(f func())                { t.cleanups = append(t.cleanups, f) }

func (t *exampleT) close() {
	for i := len(t.cleanups) - 1; i >= 0; i-- {
		t.cleanups[i]()
	}
}

// exampleVerifier is a Verifier of forgetest's FITs: forgetest's JWKS server
// stands in for Forge's.
func exampleVerifier(t *exampleT) (*forge.Verifier, *forgetest.Key) {
	key := forgetest.NewKey(t, "forge-key-1")
	jwks := forgetest.NewJWKSServer(t, key)
	v, err := forge.NewVerifier(context.Background(), forge.VerifierConfig{
		AppID:   forgetest.AppID, // your app's ARI, as in manifest.yml's app.id
		JWKSURL: jwks.URL(),      // in production: Forge's JWKS URL
	})
	if err != nil {
		log.Fatal(err)
	}
	t.Cleanup(v.Close)
	return v, key
}

func ExampleVerifier_Verify() {
	t := &exampleT{}
	defer t.close()
	v, key := exampleVerifier(t)

	fit := forgetest.MintFIT(t, key, forgetest.WithPrincipal("557058:ada"),
		forgetest.WithInstallation("0f6f5a0e-2b7c-4f0e-9a57-3b5d2f6c7e10", "a436116f-02ce-4520-8fbb-7301462a1674"))
	inv, err := v.Verify(context.Background(), fit)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("principal:", inv.Principal)
	fmt.Println("installation:", inv.InstallationID())
	fmt.Println("site:", inv.CloudID())

	// A FIT for another app is refused: answer 401.
	_, err = v.Verify(context.Background(), forgetest.MintFIT(t, key,
		forgetest.WithAudience("ari:cloud:ecosystem::app/00000000-0000-0000-0000-000000000000")))
	var ve *forge.VerifyError
	if errors.As(err, &ve) {
		fmt.Println("refused:", ve.Reason)
	}
	// Output:
	// principal: 557058:ada
	// installation: ari:cloud:ecosystem::installation/0f6f5a0e-2b7c-4f0e-9a57-3b5d2f6c7e10
	// site: a436116f-02ce-4520-8fbb-7301462a1674
	// refused: bad_audience
}

func ExampleMiddleware() {
	t := &exampleT{}
	defer t.close()
	v, key := exampleVerifier(t)

	mux := http.NewServeMux()
	mux.HandleFunc("POST /resolvers/hello", func(w http.ResponseWriter, r *http.Request) {
		inv, _ := forge.InvocationFrom(r.Context()) // always there behind the middleware
		fmt.Fprintf(w, "hello %s", inv.Principal)
	})
	handler := forge.Middleware(v)(mux) // add forge.WithAppTokenCapture(appTokens) to keep app tokens

	for _, authorization := range []string{
		"Bearer " + forgetest.MintFIT(t, key, forgetest.WithPrincipal("557058:ada")),
		"", // no FIT: 401
	} {
		req := httptest.NewRequest(http.MethodPost, "/resolvers/hello", nil)
		if authorization != "" {
			req.Header.Set("Authorization", authorization)
		}
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, req)
		fmt.Println(rec.Code, rec.Body)
	}
	// Output:
	// 200 hello 557058:ada
	// 401 {"error":{"code":"invalid_invocation_token","message":"Forge invocation token rejected: missing_token"}}
}

// With Gin, the middleware runs in a handler of a route group: the request it
// passes on (carrying the invocation) continues down the Gin chain.
func ExampleMiddleware_gin() {
	t := &exampleT{}
	defer t.close()
	v, key := exampleVerifier(t)

	auth := forge.Middleware(v)
	forgeAuth := func(c *gin.Context) {
		passed := false
		auth(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
			passed = true
			c.Request = r
			c.Next()
		})).ServeHTTP(c.Writer, c.Request)
		if !passed {
			c.Abort()
		}
	}

	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	forgeRoutes := r.Group("/resolvers", forgeAuth)
	forgeRoutes.POST("/hello", func(c *gin.Context) {
		inv, _ := forge.InvocationFrom(c.Request.Context())
		c.JSON(http.StatusOK, gin.H{"hello": inv.Principal})
	})

	req := httptest.NewRequest(http.MethodPost, "/resolvers/hello", nil)
	req.Header.Set("Authorization", "Bearer "+forgetest.MintFIT(t, key, forgetest.WithPrincipal("557058:ada")))
	rec := httptest.NewRecorder()
	r.ServeHTTP(rec, req)
	fmt.Println(rec.Code, rec.Body)
	// Output:
	// 200 {"hello":"557058:ada"}
}

// oneToken is an AppTokenSource of one installation's token, kept elsewhere
// than in AppTokens.
type oneToken struct{ tok forge.AppToken }

func (s oneToken) Usable(_ context.Context, installationID string) (forge.AppToken, error) {
	if installationID != s.tok.InstallationID {
		return forge.AppToken{}, forge.ErrUnknownInstallation
	}
	return s.tok, nil
}

func (oneToken) MarkUnusable(context.Context, string, string) error { return nil }

func ExampleNewClient() {
	// Stands in for the site's apiBaseUrl.
	confluence := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer app-system-token" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		fmt.Fprint(w, `{"results":[{"id":"65537","title":"Team home"}]}`)
	}))
	defer confluence.Close()

	const inst = "ari:cloud:ecosystem::installation/0f6f5a0e-2b7c-4f0e-9a57-3b5d2f6c7e10"
	tokens := oneToken{forge.AppToken{
		InstallationID: inst, APIBaseURL: confluence.URL,
		Token: "app-system-token", Exp: time.Now().Add(time.Hour),
	}}
	client := forge.NewClient(tokens, forge.ClientOptions{})

	var pages struct {
		Results []struct{ ID, Title string }
	}
	if err := client.AsApp(inst).GetJSON(context.Background(), "/wiki/api/v2/pages?limit=1", &pages); err != nil {
		log.Fatal(err)
	}
	fmt.Println(pages.Results[0].ID, pages.Results[0].Title)
	// Output:
	// 65537 Team home
}
