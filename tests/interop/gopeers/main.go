// sdkpeer is a test peer built on Piko's Go SDK (github.com/andydunstall/piko/client).
// The interop tests run it against our server to check that an unmodified SDK
// user sees the behaviour Piko gives them.
//
//	sdkpeer listen -url U -endpoint E     Upstream.Listen, then an HTTP server on the listener
//	sdkpeer dial -url U -endpoint E [-prefix P] -send S
//	                                      Dialer.Dial, write P and S, read len(S) bytes, print them
//
// listen prints "listening" on stdout once Listen returned, and serves until
// SIGTERM. Its handler answers every request with 200 and a body of
// "sdk <method> <path> <request body>", and headers x-sdk-host (the Host it
// saw) and x-sdk-forward (the x-piko-forward header). Errors go to stderr as
// "<op>: <error>" with exit status 1.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/andydunstall/piko/client"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: sdkpeer listen|dial [flags]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	rawURL := fs.String("url", "", "server URL (upstream port for listen, proxy port for dial)")
	endpoint := fs.String("endpoint", "", "endpoint ID")
	token := fs.String("token", "", "bearer token")
	prefix := fs.String("prefix", "", "dial: bytes to send first, not expected back")
	send := fs.String("send", "", "dial: bytes to send and expect echoed")
	timeout := fs.Duration("timeout", 10*time.Second, "connect timeout")
	_ = fs.Parse(os.Args[2:])

	u, err := url.Parse(*rawURL)
	if err != nil || *endpoint == "" {
		fmt.Fprintln(os.Stderr, "sdkpeer: -url and -endpoint are required")
		os.Exit(2)
	}

	switch os.Args[1] {
	case "listen":
		listen(u, *endpoint, *token, *timeout)
	case "dial":
		dial(u, *endpoint, *token, *prefix+*send, len(*send), *timeout)
	default:
		fmt.Fprintln(os.Stderr, "sdkpeer: unknown command", os.Args[1])
		os.Exit(2)
	}
}

func fail(op string, err error) {
	fmt.Fprintf(os.Stderr, "%s: %v\n", op, err)
	os.Exit(1)
}

func listen(u *url.URL, endpoint, token string, timeout time.Duration) {
	upstream := &client.Upstream{URL: u, Token: token}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	ln, err := upstream.Listen(ctx, endpoint)
	cancel()
	if err != nil {
		fail("listen", err)
	}
	fmt.Println("listening")

	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("x-sdk-host", r.Host)
		w.Header().Set("x-sdk-forward", r.Header.Get("x-piko-forward"))
		fmt.Fprintf(w, "sdk %s %s %s", r.Method, r.URL.RequestURI(), body)
	})}
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
		<-sig
		_ = ln.Close()
		_ = srv.Close()
	}()
	// Serve returns the listener's "closed" error after SIGTERM: a clean exit.
	_ = srv.Serve(ln)
	os.Exit(0)
}

func dial(u *url.URL, endpoint, token, send string, expect int, timeout time.Duration) {
	dialer := &client.Dialer{URL: u, Token: token}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	conn, err := dialer.Dial(ctx, endpoint)
	if err != nil {
		fail("dial", err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(timeout))
	if _, err := conn.Write([]byte(send)); err != nil {
		fail("write", err)
	}
	buf := make([]byte, expect)
	if _, err := io.ReadFull(conn, buf); err != nil {
		fail("read", err)
	}
	fmt.Printf("%s\n", buf)
}
