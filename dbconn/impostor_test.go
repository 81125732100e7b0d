package dbconn_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"encoding/binary"
	"encoding/pem"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/csmh-sync/csmh-sync/dbconn"
)

// keyImpostor poses as a MySQL 8.4 server on a connection without TLS: it asks for full authentication and
// answers the client's request for its RSA key with its own key, then decrypts whatever password comes back.
// confuse names two plugins in the greeting (the clients take the first, caching_sha2_password); split sends
// the key in a packet longer than 16 MiB, so it arrives in two protocol packets that the clients join.
type keyImpostor struct {
	ln        net.Listener
	key       *rsa.PrivateKey
	confuse   bool
	split     bool
	wg        sync.WaitGroup
	mu        sync.Mutex
	passwords []string
}

const impostorSalt = "abcdefghijklmnopqrst"

func startKeyImpostor(t *testing.T, confuse, split bool) *keyImpostor {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	s := &keyImpostor{ln: ln, key: k, confuse: confuse, split: split}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.wg.Add(1)
			go func() { defer s.wg.Done(); s.serve(c) }()
		}
	}()
	t.Cleanup(s.stop)
	return s
}

func (s *keyImpostor) stop() { _ = s.ln.Close(); s.wg.Wait() }

// got stops the impostor and returns the passwords it decrypted.
func (s *keyImpostor) got() []string {
	s.stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.passwords...)
}

func writePkt(w io.Writer, seq byte, payload []byte) error {
	n := len(payload)
	_, err := w.Write(append([]byte{byte(n), byte(n >> 8), byte(n >> 16), seq}, payload...))
	return err
}

func readPkt(r io.Reader) (byte, []byte, error) {
	var h [4]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	b := make([]byte, int(h[0])|int(h[1])<<8|int(h[2])<<16)
	_, err := io.ReadFull(r, b)
	return h[3], b, err
}

func (s *keyImpostor) serve(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	caps := uint32(0x1 | 0x4 | 0x200 | 0x2000 | 0x8000 | 0x80000) // no CLIENT_SSL: the login stays plaintext
	g := []byte{10}
	g = append(g, "8.4.3-impostor\x00"...)
	g = binary.LittleEndian.AppendUint32(g, 7)
	g = append(g, impostorSalt[:8]...)
	g = append(g, 0)
	g = binary.LittleEndian.AppendUint16(g, uint16(caps))
	g = append(g, 45)
	g = binary.LittleEndian.AppendUint16(g, 2)
	g = binary.LittleEndian.AppendUint16(g, uint16(caps>>16))
	g = append(g, 21)
	g = append(g, make([]byte, 10)...)
	g = append(g, impostorSalt[8:]...)
	g = append(g, 0)
	g = append(g, "caching_sha2_password\x00"...)
	if s.confuse {
		g = append(g, "mysql_native_password\x00"...)
	}
	if writePkt(c, 0, g) != nil {
		return
	}
	seq, _, err := readPkt(c)
	if err != nil || writePkt(c, seq+1, []byte{0x01, 0x04}) != nil { // perform_full_authentication
		return
	}
	seq, body, err := readPkt(c)
	if err != nil || !bytes.Equal(body, []byte{0x02}) { // request_public_key
		return
	}
	der, _ := x509.MarshalPKIXPublicKey(&s.key.PublicKey)
	pemKey := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	const max = 1<<24 - 1
	payload := append([]byte{0x01}, pemKey...)
	if s.split { // "-----BEGIN" ends the first protocol packet's payload, "-----END" is in the second
		filler := bytes.Repeat([]byte{'x'}, max-1-1-100)
		payload = append(append(append([]byte{0x01}, filler...), '\n'), pemKey...)
	}
	seq++
	for len(payload) >= max {
		if writePkt(c, seq, payload[:max]) != nil {
			return
		}
		payload, seq = payload[max:], seq+1
	}
	if writePkt(c, seq, payload) != nil {
		return
	}
	seq, body, err = readPkt(c)
	if err != nil {
		return
	}
	if plain, err := rsa.DecryptOAEP(sha1.New(), rand.Reader, s.key, body, nil); err == nil {
		for i := range plain {
			plain[i] ^= impostorSalt[i%len(impostorSalt)]
		}
		s.mu.Lock()
		s.passwords = append(s.passwords, string(bytes.TrimRight(plain, "\x00")))
		s.mu.Unlock()
	}
	_ = writePkt(c, seq+1, append([]byte{0xff, 0x15, 0x04}, "#28000Access denied"...))
}

// A server on the path that offers no TLS never gets the password under a key of its own: not when its greeting
// names two plugins (the clients use the first, caching_sha2_password), not when it splits its key across two
// protocol packets, not with both. Both clients fail the login with an error, and neither panics.
func TestImpostorKeyNeverGetsThePassword(t *testing.T) {
	for _, c := range []struct {
		name           string
		confuse, split bool
	}{
		{"plain", false, false},
		{"two plugins named", true, false},
		{"key split in two packets", false, true},
		{"both", true, true},
	} {
		for _, client := range []string{"sql", "binlog"} {
			t.Run(c.name+"/"+client, func(t *testing.T) {
				fake := startKeyImpostor(t, c.confuse, c.split)
				e := dbconn.Endpoint{Role: "source", DSN: "csmh:" + secret + "@tcp(" + fake.ln.Addr().String() + ")/",
					TLS: dbconn.TLS{Mode: dbconn.TLSDisabled}}
				var err error
				if client == "sql" {
					_, _, err = dbconn.Open(context.Background(), e, dbconn.Options{DialTimeout: 10 * time.Second})
				} else {
					cfg, cerr := e.Config()
					if cerr != nil {
						t.Fatal(cerr)
					}
					cfg.Timeout = 10 * time.Second
					func() {
						defer func() {
							if r := recover(); r != nil {
								t.Errorf("the binlog client panicked during the guarded login: %v", r)
							}
						}()
						err = binlogLogin(t, fake.ln.Addr().String(), nil, dbconn.BinlogDialer(cfg))
					}()
				}
				if err == nil {
					t.Errorf("the login to the impostor succeeded")
				}
				if got := fake.got(); len(got) > 0 {
					t.Errorf("the impostor decrypted the password %q", got[0])
				}
			})
		}
	}
}

// The same with the default TLS mode (preferred, which settles on plaintext when the server offers no TLS) and
// the password from a file.
func TestImpostorKeyNeverGetsThePasswordByDefault(t *testing.T) {
	fake := startKeyImpostor(t, true, true)
	pw := t.TempDir() + "/pw"
	if err := os.WriteFile(pw, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e := dbconn.Endpoint{Role: "source", DSN: "csmh@tcp(" + fake.ln.Addr().String() + ")/", PasswordFile: pw}
	if _, _, err := dbconn.Open(context.Background(), e, dbconn.Options{DialTimeout: 10 * time.Second}); err == nil {
		t.Errorf("the login to the impostor succeeded")
	}
	if got := fake.got(); len(got) > 0 {
		t.Errorf("the impostor decrypted the password %q", got[0])
	}
}
