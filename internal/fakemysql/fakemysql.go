// Package fakemysql is an impostor MySQL server for tests: it greets like MariaDB, takes the client's login and
// then asks, by an auth switch, for the password in clear text (mysql_clear_password), as a man in the middle or
// a rogue server on the path would. Everything the clients sent is kept, so a test can prove a password never
// arrived. StartCachingSHA2 plays a MySQL 8.4 server instead, asking for caching_sha2_password's full
// authentication and handing out its RSA public key to whoever asks; StartRSA plays MySQL 5.7/8.0's
// sha256_password too, or an impostor that disguises the key it hands out.
package fakemysql

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"encoding/binary"
	"encoding/pem"
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
	rsaKey   *rsa.PrivateKey // caching_sha2_password or sha256_password mode (StartCachingSHA2, StartRSA)
	rsa      RSA
	password []string // what the RSA-encrypted password packets decrypted to

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

// StartCachingSHA2 listens on 127.0.0.1 as a MySQL 8.4 server without TLS whose user authenticates with
// caching_sha2_password and is not in the server's cache (the first login after a restart or FLUSH
// PRIVILEGES), so the login takes the full authentication: the exchange of "caching_sha2_password information"
// (https://dev.mysql.com/doc/dev/mysql-server/latest/page_caching_sha2_authentication_exchanges.html): the
// server answers the scramble with 0x01 0x04 (perform_full_authentication), a client without TLS asks for the
// public key with 0x02 (request_public_key), the server sends 0x01 and the key in PEM, and the client sends
// the password XORed with the scramble, RSA-OAEP-encrypted with that key. key is the server's key pair.
func StartCachingSHA2(tb testing.TB, key *rsa.PrivateKey) *Server { return StartRSA(tb, key, RSA{}) }

// RSA shapes the login of StartRSA.
type RSA struct {
	// Plugin is the greeting's auth plugin: "caching_sha2_password" (the default, the exchange of
	// StartCachingSHA2) or "sha256_password" (MySQL 5.7's and 8.0's: the server answers the login with 0x01 and
	// its key in PEM, whatever the client sent, and the client sends the password encrypted as above).
	Plugin string
	// KeyPacket makes the payload of the packet that carries the key from the key's PEM; nil: 0x01 and the PEM,
	// as MySQL sends it. An impostor disguises the key to slip it past a client's checks.
	KeyPacket func(pemKey []byte) []byte
}

// StartRSA is StartCachingSHA2 with the login shaped by r.
func StartRSA(tb testing.TB, key *rsa.PrivateKey, r RSA) *Server {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	if r.Plugin == "" {
		r.Plugin = "caching_sha2_password"
	}
	s := &Server{ln: ln, rsaKey: key, rsa: r}
	s.wg.Add(1)
	go s.accept()
	tb.Cleanup(s.stop)
	return s
}

// Passwords stops the server and returns what the encrypted password packets it received decrypted to.
func (s *Server) Passwords() []string {
	s.stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.password...)
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
	if s.rsaKey != nil {
		s.serveCachingSHA2(c)
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

// serveCachingSHA2 is the full authentication after the greeting, ending with an access-denied error (the
// test reads what the password decrypted to).
func (s *Server) serveCachingSHA2(c net.Conn) {
	der, _ := x509.MarshalPKIXPublicKey(&s.rsaKey.PublicKey)
	pemKey := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	keyPacket := append([]byte{0x01}, pemKey...)
	if s.rsa.KeyPacket != nil {
		keyPacket = s.rsa.KeyPacket(pemKey)
	}
	seq, _, ok := s.readBody(c) // the login with the scramble
	if !ok {
		return
	}
	var body []byte
	if s.rsa.Plugin == "sha256_password" {
		if writePacket(c, seq+1, keyPacket) != nil {
			return
		}
		if seq, body, ok = s.readBody(c); !ok {
			return
		}
	} else {
		if writePacket(c, seq+1, []byte{0x01, 0x04}) != nil {
			return
		}
		if seq, body, ok = s.readBody(c); !ok {
			return
		}
		if bytes.Equal(body, []byte{0x02}) { // request_public_key
			if writePacket(c, seq+1, keyPacket) != nil {
				return
			}
			if seq, body, ok = s.readBody(c); !ok {
				return
			}
		}
	}
	if plain, err := rsa.DecryptOAEP(sha1.New(), rand.Reader, s.rsaKey, body, nil); err == nil {
		salt := []byte(fakeSalt)
		for i := range plain {
			plain[i] ^= salt[i%len(salt)]
		}
		s.mu.Lock()
		s.password = append(s.password, string(bytes.TrimRight(plain, "\x00")))
		s.mu.Unlock()
	}
	msg := append([]byte{0xff, 0x15, 0x04}, "#28000Access denied"...) // 1045
	_ = writePacket(c, seq+1, msg)
}

// readBody reads one client packet and returns it too.
func (s *Server) readBody(c net.Conn) (byte, []byte, bool) {
	var hdr [4]byte
	_, err := io.ReadFull(c, hdr[:])
	s.keep(hdr[:])
	if err != nil {
		return 0, nil, false
	}
	n := int(hdr[0]) | int(hdr[1])<<8 | int(hdr[2])<<16
	body := make([]byte, n)
	k, err := io.ReadFull(c, body)
	s.keep(body[:k])
	return hdr[3], body, err == nil
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
	salt := []byte(fakeSalt)
	version, plugin := "5.5.5-10.11.0-MariaDB-fake", "mysql_native_password"
	if s.rsaKey != nil {
		version, plugin = "8.4.3-fake", s.rsa.Plugin
	}
	b := []byte{10}
	b = append(b, version+"\x00"...)
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
	return append(b, plugin+"\x00"...)
}

// fakeSalt is the scramble of every greeting: 20 bytes, none of them NUL.
const fakeSalt = "abcdefghijklmnopqrst"

func writePacket(w io.Writer, seq byte, payload []byte) error {
	n := len(payload)
	_, err := w.Write(append([]byte{byte(n), byte(n >> 8), byte(n >> 16), seq}, payload...))
	return err
}
