// Command gorilla: a WebSocket echo server on gorilla/websocket, a peer of
// `rawepoll compare --sections websocket`.
//
// The handler is the echo loop of gorilla's package documentation:
// ReadMessage, then WriteMessage of the same type -- one goroutine per
// connection, each message read whole and written back as one frame
// (streaming through NextReader/NextWriter would cut a message larger than the
// write buffer into fragments, which a client that checks every echo frame
// byte for byte rejects); gorilla answers pings and close frames itself.  The
// Upgrader keeps its zero buffer sizes, so a connection reuses the HTTP
// server's 4 KiB read and write buffers instead of allocating its own.  No
// compression (not offered).
//
// Usage: gorilla [--host HOST] [--port PORT] [--status-fd N].  Port 0 picks a
// free one.  Once listening it prints "listening on HOST:PORT" and, with
// --status-fd, writes the JSON "ready" event of `rawepoll serve` to
// descriptor N (rawepoll.tools.serverproc.write_ready writes the same for the
// Python peers).  SIGTERM or SIGINT: it exits 0 at once.
//
// Built by rawepoll.tools.compare.wsservers with Debian's golang-go and
// golang-github-gorilla-websocket-dev, offline: GO111MODULE=off,
// GOPATH=/usr/share/gocode, GOPROXY=off.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/gorilla/websocket"
)

var upgrader = websocket.Upgrader{}

func echo(w http.ResponseWriter, r *http.Request) {
	conn, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // Upgrade has answered the request with an HTTP error
	}
	defer conn.Close()
	for {
		kind, message, err := conn.ReadMessage()
		if err != nil {
			return // a close frame (answered), an error, or EOF
		}
		if err := conn.WriteMessage(kind, message); err != nil {
			return
		}
	}
}

// ready is the "ready" event of rawepoll serve's status stream.
type ready struct {
	Event   string  `json:"event"`
	Address string  `json:"address"`
	Family  string  `json:"family"`
	Host    string  `json:"host"`
	Port    int     `json:"port"`
	Path    *string `json:"path"`
	Pid     int     `json:"pid"`
	Workers []int   `json:"workers"`
}

// status stays referenced for the life of the process: an unreachable *os.File
// is closed by its finalizer, and the reader would take that for an exit.
var status *os.File

func announce(listener net.Listener, statusFd int) error {
	addr := listener.Addr().(*net.TCPAddr)
	host, family := addr.IP.String(), "inet"
	shown := net.JoinHostPort(host, strconv.Itoa(addr.Port))
	if addr.IP.To4() == nil {
		family = "inet6"
	}
	fmt.Printf("listening on %s\n", shown)
	if statusFd < 0 {
		return nil
	}
	pid := os.Getpid()
	event, err := json.Marshal(ready{"ready", shown, family, host, addr.Port, nil, pid, []int{pid}})
	if err != nil {
		return err
	}
	status = os.NewFile(uintptr(statusFd), "status")
	_, err = status.Write(append(event, '\n'))
	return err
}

func main() {
	host := flag.String("host", "127.0.0.1", "address to bind")
	port := flag.Int("port", 0, "TCP port (0: a free one)")
	statusFd := flag.Int("status-fd", -1, "write the JSON 'ready' event to descriptor N")
	flag.Parse()
	listener, err := net.Listen("tcp", net.JoinHostPort(*host, strconv.Itoa(*port)))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	if err := announce(listener, *statusFd); err != nil {
		fmt.Fprintln(os.Stderr, "status:", err)
		os.Exit(1)
	}
	go func() {
		err := http.Serve(listener, http.HandlerFunc(echo))
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}()
	<-stop
	os.Exit(0) // the kernel closes the listener and every connection
}
