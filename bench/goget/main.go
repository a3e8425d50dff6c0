// goget downloads a URL the way Terraform's provider installer does: Go's
// net/http default transport (HTTP/2 by ALPN whenever the server offers it,
// HTTP/1.1 otherwise), the body copied through a 32 KiB buffer as io.Copy
// into a file does, here into nothing. The CA comes from SSL_CERT_FILE, as
// for Terraform.
//
// Usage: goget URL [N]  — N sequential GETs on one client (keep-alive); per
// GET it prints one line: "status proto bytes ttfb_seconds total_seconds",
// proto as curl's %{http_version} spells it ("1.1" or "2").
//
// Built by bench/tools.ts (goClient) into a cache dir; standard library only.
package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"os"
	"strconv"
	"time"
)

// discard hides io.Discard's ReaderFrom, so the copy uses our buffer size.
type discard struct{ io.Writer }

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: goget URL [N]")
		os.Exit(2)
	}
	url := os.Args[1]
	n := 1
	if len(os.Args) > 2 {
		v, err := strconv.Atoi(os.Args[2])
		if err != nil || v < 1 {
			fmt.Fprintln(os.Stderr, "N must be a positive integer")
			os.Exit(2)
		}
		n = v
	}
	client := &http.Client{} // http.DefaultTransport: ForceAttemptHTTP2
	buf := make([]byte, 32<<10)
	for i := 0; i < n; i++ {
		start := time.Now()
		var first time.Duration
		trace := &httptrace.ClientTrace{
			GotFirstResponseByte: func() { first = time.Since(start) },
		}
		req, err := http.NewRequest("GET", url, nil)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
		resp, err := client.Do(req)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		got, err := io.CopyBuffer(discard{io.Discard}, resp.Body, buf)
		resp.Body.Close()
		total := time.Since(start)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		proto := "1.1"
		if resp.ProtoMajor == 2 {
			proto = "2"
		}
		fmt.Printf("%d %s %d %.6f %.6f\n", resp.StatusCode, proto, got, first.Seconds(), total.Seconds())
	}
}
