package dbconn

import (
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-sql-driver/mysql"
)

// ClearPasswordRefused is the error number (MySQL's CR_AUTH_PLUGIN_CANNOT_LOAD, what its own client says when
// mysql_clear_password is not enabled) of the error a guarded connection reports instead of the server's request
// for the password in clear text.
const ClearPasswordRefused = 2059

const clearPasswordRefusedMsg = "the server asked for the password in clear text (mysql_clear_password) on a connection " +
	"without TLS: refused; use --source-tls verify-identity (or required)"

// BinlogDialer is the dialer of the binlog connection (go-mysql's BinlogSyncerConfig.Dialer): it dials what the
// source DSN names, unix sockets included, bounded by its dial timeout, through the login guard
// (GuardClearPassword, with the source's --source-server-public-key).
func BinlogDialer(cfg *mysql.Config) func(ctx context.Context, network, addr string) (net.Conn, error) {
	network, addr := cfg.Net, cfg.Addr
	if network == "" {
		network = "tcp"
	}
	timeout := max(cfg.Timeout, 5*time.Second)
	o := guardOpts{flag: "--source", local: network == "unix", pinned: pinnedKey(cfg.ServerPubKey)}
	return func(ctx context.Context, _, _ string) (net.Conn, error) {
		d := net.Dialer{Timeout: timeout}
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return guard(c, o), nil
	}
}

// sqlDialer is the DialFunc of an endpoint's SQL connections (go-sql-driver): the same login guard.
func sqlDialer(role string, pinned *rsa.PublicKey) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return guard(c, guardOpts{flag: "--" + role, local: network == "unix", pinned: pinned}), nil
	}
}

// guardOpts configure the login guard of one connection.
type guardOpts struct {
	flag   string         // the endpoint's flag prefix, for the fix: --source
	local  bool           // a unix socket: the password may be sent as it is (caching_sha2_password does)
	pinned *rsa.PublicKey // the server's RSA key from --*-server-public-key; nil: none given
}

// AuthRequiresSecureConnection is the error number (MySQL's CR_AUTH_PLUGIN_ERR) of the error a guarded
// connection reports instead of caching_sha2_password's request for full authentication, when neither TLS nor a
// unix socket nor a pinned server key can carry the password. MySQL's own client says the same there
// (without --get-server-public-key): "Authentication plugin 'caching_sha2_password' reported error:
// Authentication requires secure connection."
const AuthRequiresSecureConnection = 2061

func fullAuthRefusedMsg(flag string) string {
	return "Authentication plugin 'caching_sha2_password' reported error: Authentication requires secure connection " +
		"(the server asked for the whole password; without TLS it would go out encrypted with an RSA key the server " +
		"sends unverified, which anyone on the path could replace): use " + flag + "-tls required or verify-identity, " +
		"or give the server's public key (its public_key.pem) with " + flag + "-server-public-key FILE"
}

// keyRefusedMsg is the message of the error packet (AuthRequiresSecureConnection) a guarded connection hands
// the client in place of an RSA public key the server sent on a connection without TLS that is not the pinned
// one (pinned: a key was given with --*-server-public-key).
func keyRefusedMsg(flag, plugin string, pinned bool) string {
	if !pinned {
		return "the server offered an RSA public key for the password on a connection without TLS (" + plugin + "), " +
			"unverified: refused, the password was not sent (a server on the path may pose as the real one); use " +
			flag + "-tls required or verify-identity, or give the server's public key (its public_key.pem) with " +
			flag + "-server-public-key FILE"
	}
	return "the server sent an RSA public key for the password on a connection without TLS that is not the one in " +
		flag + "-server-public-key: refused, the password was not sent (a server on the path may pose as the real one); " +
		"check the file against the server's public_key.pem, or use " + flag + "-tls required or verify-identity"
}

// GuardClearPassword wraps the client side of a MySQL connection so that the password is never sent in clear
// text without TLS. go-mysql's client (v1.13.0, client/auth.go genAuthResponse) answers a server's auth switch to
// mysql_clear_password with the password itself, TLS or not; go-sql-driver refuses unless told otherwise.
//
// Until the login ends, the guard reads the server's packets whole before handing them on. When the server asks
// to switch to mysql_clear_password, the guard closes the socket and hands the client an error packet
// (ClearPasswordRefused) in its place, so the client gives up with that error and nothing more reaches the
// server. Once the client's first packet turns out to be an SSL request, the rest of the login runs inside TLS,
// where the password may travel: the guard steps aside. After the login's OK or error packet it only passes bytes.
//
// The guard also keeps caching_sha2_password (MySQL 8's default) and sha256_password from sending the password
// under an RSA key the server hands out over plaintext, unverified, which both go-sql-driver (v1.10.1,
// auth.go) and go-mysql (v1.13.0, packet/conn.go WritePublicKeyAuthPacket) would do: without TLS and off a unix
// socket, caching_sha2_password's request for full authentication is answered with an error packet
// (AuthRequiresSecureConnection) unless a server key is pinned (--*-server-public-key; go-sql-driver then
// encrypts with it directly), and a key the server sends is let through only if it is the pinned one.
func GuardClearPassword(c net.Conn) net.Conn { return guard(c, guardOpts{flag: "--source"}) }

func guard(c net.Conn, o guardOpts) net.Conn {
	g := &clearGuard{Conn: c, opts: o}
	if sc, ok := c.(syscall.Conn); ok {
		return &clearGuardSys{clearGuard: g, sc: sc}
	}
	return g
}

// clearGuardSys is a guard over a socket that offers its file descriptor. go-sql-driver checks a pooled
// connection's socket (syscall.Conn) before reusing it, and retries on another when the server has closed it (a
// restart); without the method it would write into the dead socket and fail with "invalid connection". The
// check only peeks at the socket of a connection whose login is long over, when the guard passes bytes anyway.
type clearGuardSys struct {
	*clearGuard
	sc syscall.Conn
}

func (g *clearGuardSys) SyscallConn() (syscall.RawConn, error) { return g.sc.SyscallConn() }

type clearGuard struct {
	net.Conn
	opts     guardOpts
	off      atomic.Bool // the login is over, or runs inside TLS: pass bytes
	refused  atomic.Bool
	keyAsked atomic.Bool // the client's last packet was a one-byte request for the server's RSA key
	plugin   string      // the auth plugin in use: the greeting's, or an auth switch's

	// Touched only by the goroutine reading during the login.
	pending []byte // the rest of the packet being handed on
	packets int    // server packets read

	// Touched only by the goroutine writing during the login.
	first     []byte // the start of the client's first packet, until it is known whether it asks for TLS
	firstSeen bool
}

const clientSSL = 0x0800 // capability flag CLIENT_SSL

// maxPayload is the longest payload of one protocol packet; a longer one continues in the next.
const maxPayload = 1<<24 - 1

func (g *clearGuard) Read(p []byte) (int, error) {
	if len(g.pending) == 0 {
		if g.off.Load() {
			return g.Conn.Read(p)
		}
		pkt, err := g.readPacket()
		if err != nil {
			return 0, err
		}
		g.pending = pkt
	}
	n := copy(p, g.pending)
	g.pending = g.pending[n:]
	return n, nil
}

// readPacket reads one whole server packet and checks it.
func (g *clearGuard) readPacket() ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(g.Conn, hdr[:]); err != nil {
		return nil, err
	}
	n := int(hdr[0]) | int(hdr[1])<<8 | int(hdr[2])<<16
	if n == maxPayload {
		// The start of a packet of 16 MiB or more, which the clients join with the packets that follow: no login
		// packet is that long, and a key split across two would pass the checks below piece by piece.
		g.refuse()
		return nil, errors.New("the server sent a packet of 16 MiB or more during the login: refused (a server on the path may pose as the real one)")
	}
	pkt := make([]byte, 4+n)
	copy(pkt, hdr[:])
	if _, err := io.ReadFull(g.Conn, pkt[4:]); err != nil {
		return nil, err
	}
	g.packets++
	if g.packets == 1 { // the greeting: the client checks its plugin against those it knows
		g.plugin = greetingPlugin(pkt[4:])
		return pkt, nil
	}
	if n == 0 {
		if g.opts.local {
			return pkt, nil
		}
		// No server sends one during the login, and go-mysql indexes into it (after its request for the key,
		// or as an auth result) and would panic.
		g.refuse()
		return nil, errors.New("the server sent an empty packet during the login: refused (a server on the path may pose as the real one)")
	}
	switch pkt[4] {
	case 0x00, 0xff: // OK or error: the login is over
		g.off.Store(true)
	case 0xfe: // auth switch request: plugin name, NUL, plugin data
		plugin := pkt[5:]
		if i := indexNUL(plugin); i >= 0 {
			plugin = plugin[:i]
		}
		g.plugin = string(plugin)
		if g.plugin == "mysql_clear_password" {
			g.refuse()
			return errPacket(hdr[3], ClearPasswordRefused, clearPasswordRefusedMsg), nil
		}
	}
	if g.opts.local { // a unix socket: caching_sha2_password sends the password as it is, and no key is asked for
		return pkt, nil
	}
	// more auth data: caching_sha2_password's perform_full_authentication. Whatever plugin the greeting seems to
	// name: a greeting can name two, and the clients and the guard need not read the same one.
	if n == 2 && pkt[4] == 0x01 && pkt[5] == 0x04 && g.opts.pinned == nil {
		g.refuse()
		return errPacket(hdr[3], AuthRequiresSecureConnection, fullAuthRefusedMsg(g.opts.flag)), nil
	}
	if offers, asked := g.offersKey(pkt[4:]); offers && !sameKey(pkt[5:], g.opts.pinned) {
		g.refuse()
		msg := keyRefusedMsg(g.opts.flag, g.plugin, g.opts.pinned != nil)
		if asked { // go-mysql would parse an error packet as the key, and dereference nil: fail the read instead
			return nil, errors.New(msg)
		}
		return errPacket(hdr[3], AuthRequiresSecureConnection, msg), nil
	}
	return pkt, nil
}

// refuse ends the login: the socket is closed, and the client's next write fails.
func (g *clearGuard) refuse() {
	g.refused.Store(true)
	_ = g.Conn.Close()
}

// offersKey reports whether a client could take the login packet payload p (after the greeting, without TLS)
// for the server's RSA public key and encrypt the password with it. Both clients find the key with pem.Decode,
// which skips whatever precedes a PEM block and takes any label, so the test is not on how the packet starts:
//   - the packet right after a request for the key (caching_sha2_password's request_public_key, sha256_password's
//     one-byte request): go-mysql reads it as the key whatever its first byte, an OK packet's included, and
//     dereferences nil if it holds no PEM block;
//   - a more-data packet that is not a one-byte status (caching_sha2_password's fast_auth_success or
//     perform_full_authentication): sha256_password's key, or nothing a server sends;
//   - any packet that holds a PEM block at all.
//
// None of this depends on the plugin the guard believes in use: a greeting can name two plugins, and the clients
// and the guard need not read the same one.
//
// asked: the packet answers a request for the key.
func (g *clearGuard) offersKey(p []byte) (offers, asked bool) {
	asked = g.keyAsked.Swap(false)
	switch {
	case asked:
		return true, true
	case p[0] == 0x01 && len(p) != 2:
		return true, false
	}
	if b, _ := pem.Decode(p); b != nil {
		return true, false
	}
	b, _ := pem.Decode(p[1:])
	return b != nil, false
}

// greetingPlugin is the auth plugin a protocol-10 greeting names: the NUL-terminated string that ends it, after
// the scramble's own terminating NUL ("" if the greeting names none). It only names the plugin in messages: a
// greeting can name two, and the clients read the first.
func greetingPlugin(p []byte) string {
	p = bytes.TrimSuffix(p, []byte{0})
	i := bytes.LastIndexByte(p, 0)
	if i < 0 {
		return ""
	}
	return string(p[i+1:])
}

// sameKey reports whether the first PEM block in data, the one both clients would use, is the pinned key.
func sameKey(data []byte, pinned *rsa.PublicKey) bool {
	if pinned == nil {
		return false
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return false
	}
	k, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return false
	}
	rk, ok := k.(*rsa.PublicKey)
	return ok && rk.Equal(pinned)
}

func indexNUL(b []byte) int {
	for i, c := range b {
		if c == 0 {
			return i
		}
	}
	return -1
}

// errPacket is a MySQL error packet with sequence number seq.
func errPacket(seq byte, code uint16, msg string) []byte {
	payload := make([]byte, 0, 9+len(msg))
	payload = append(payload, 0xff)
	payload = binary.LittleEndian.AppendUint16(payload, code)
	payload = append(payload, "#HY000"...)
	payload = append(payload, msg...)
	pkt := []byte{byte(len(payload)), byte(len(payload) >> 8), byte(len(payload) >> 16), seq}
	return append(pkt, payload...)
}

var errGuardClosed = errors.New("connection closed: the server asked for the password in clear text without TLS")

func (g *clearGuard) Write(p []byte) (int, error) {
	if g.refused.Load() {
		return 0, errGuardClosed
	}
	if !g.off.Load() {
		if !g.firstSeen {
			g.watchFirst(p)
		}
		// Both clients write a packet whole, header and payload in one call. A one-byte 0x02 is
		// caching_sha2_password's request for the server's key, a one-byte 0x01 sha256_password's.
		g.keyAsked.Store(len(p) == 5 && p[0] == 1 && p[1] == 0 && p[2] == 0 && (p[4] == 0x02 || p[4] == 0x01))
	}
	return g.Conn.Write(p)
}

// watchFirst looks at the start of the client's first packet: an SSL request is 32 bytes of payload with CLIENT_SSL.
func (g *clearGuard) watchFirst(p []byte) {
	const need = 8 // header and the capability flags
	g.first = append(g.first, p[:min(len(p), need-len(g.first))]...)
	if len(g.first) < need {
		return
	}
	n := int(g.first[0]) | int(g.first[1])<<8 | int(g.first[2])<<16
	caps := binary.LittleEndian.Uint32(g.first[4:8])
	if n == 32 && caps&clientSSL != 0 {
		g.off.Store(true)
	}
	g.first, g.firstSeen = nil, true
}
