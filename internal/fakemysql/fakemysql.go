// Package fakemysql is an impostor MySQL server for tests: it greets like MariaDB, takes the client's login and
// then asks, by an auth switch, for the password in clear text (mysql_clear_password), as a man in the middle or
// a rogue server on the path would. Everything the clients sent is kept, so a test can prove a password never
// arrived.
package fakemysql

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// Server listens on a loopback port until the test ends.
type Server struct {
	ln       net.Listener
	offerTLS bool

	wg    sync.WaitGroup
	mu    sync.Mutex
	got   bytes.Buffer
	conns int
}

// Start listens on 127.0.0.1. offerTLS sets CLIENT_SSL in the greeting (the server never does TLS: a client
// that asks for it gets nothing it can use).
func Start(tb testing.TB, offerTLS bool) *Server {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	s := &Server{ln: ln, offerTLS: offerTLS}
	s.wg.Add(1)
	go s.accept()
	tb.Cleanup(s.stop)
	return s
}

// Addr is host:port.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Received stops the server, waits for the connections to end and returns every byte the clients sent, and
// how many connections there were.
func (s *Server) Received() ([]byte, int) {
	s.stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.got.Bytes()), s.conns
}

func (s *Server) stop() {
	_ = s.ln.Close()
	s.wg.Wait()
}

func (s *Server) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns++
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serve(c)
		}()
	}
}

// serve runs one login: greeting, the client's answer, the auth switch, the client's answer to it, an error.
func (s *Server) serve(c net.Conn) {
	defer c.Close()
	// A safety net against a client that hangs; every test ends its connections long before.
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if err := writePacket(c, 0, s.greeting()); err != nil {
		return
	}
	seq, ok := s.read(c)
	if !ok {
		return
	}
	if err := writePacket(c, seq+1, append([]byte{0xfe}, "mysql_clear_password\x00"...)); err != nil {
		return
	}
	if seq, ok = s.read(c); !ok {
		return
	}
	msg := append([]byte{0xff, 0x15, 0x04}, "#28000Access denied"...) // 1045
	_ = writePacket(c, seq+1, msg)
}

// read reads one client packet, keeping its bytes; false at EOF or on an error.
func (s *Server) read(c net.Conn) (byte, bool) {
	var hdr [4]byte
	_, err := io.ReadFull(c, hdr[:])
	s.keep(hdr[:])
	if err != nil {
		return 0, false
	}
	n := int(hdr[0]) | int(hdr[1])<<8 | int(hdr[2])<<16
	body := make([]byte, n)
	k, err := io.ReadFull(c, body)
	s.keep(body[:k])
	return hdr[3], err == nil
}

func (s *Server) keep(b []byte) {
	s.mu.Lock()
	s.got.Write(b)
	s.mu.Unlock()
}

const (
	capLongPassword = 0x00000001
	capLongFlag     = 0x00000004
	capProtocol41   = 0x00000200
	capSSL          = 0x00000800
	capTransactions = 0x00002000
	capSecureConn   = 0x00008000
	capPluginAuth   = 0x00080000
)

// greeting is a protocol-10 handshake offering mysql_native_password.
func (s *Server) greeting() []byte {
	caps := uint32(capLongPassword | capLongFlag | capProtocol41 | capTransactions | capSecureConn | capPluginAuth)
	if s.offerTLS {
		caps |= capSSL
	}
	salt := []byte("abcdefghijklmnopqrst") // 20 bytes
	b := []byte{10}
	b = append(b, "5.5.5-10.11.0-MariaDB-fake\x00"...)
	b = binary.LittleEndian.AppendUint32(b, 7) // connection id
	b = append(b, salt[:8]...)
	b = append(b, 0)
	b = binary.LittleEndian.AppendUint16(b, uint16(caps))
	b = append(b, 45)                          // utf8mb4_general_ci
	b = binary.LittleEndian.AppendUint16(b, 2) // autocommit
	b = binary.LittleEndian.AppendUint16(b, uint16(caps>>16))
	b = append(b, 21)                  // length of the auth plugin data
	b = append(b, make([]byte, 10)...) // reserved
	b = append(b, salt[8:]...)
	b = append(b, 0)
	return append(b, "mysql_native_password\x00"...)
}

func writePacket(w io.Writer, seq byte, payload []byte) error {
	n := len(payload)
	_, err := w.Write(append([]byte{byte(n), byte(n >> 8), byte(n >> 16), seq}, payload...))
	return err
}
