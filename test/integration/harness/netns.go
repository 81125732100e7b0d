package harness

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Isolated servers are the lookalikes that two deployments of one chart or image are: each mariadbd runs in a
// network namespace of its own (reached from the test over a veth pair with a private /30 of 10.213.0.0/16),
// so every one listens on port 3306; in a UTS namespace of its own with the hostname the test chooses; and in
// a mount namespace of its own where its own data directory is bind-mounted at the path the test chooses, so
// @@datadir reads the same on all of them. Nothing but the namespace's own addresses is configured, and
// nothing outside the namespaces is mounted.
//
// The namespaces live exactly as long as their server: Stop removes them, and one left by a test binary that
// died (its mariadbd dies with it, by Pdeathsig) is removed by the next StartIsolated of any process.

// IsolatedPort is the port every isolated server listens on, inside its own network namespace.
const IsolatedPort = 3306

const (
	netnsPrefix = "csmh-harness-" // + owner pid + "-" + sequence: the network namespace
	vethPrefix  = "chv"           // + owner pid + "h" or "n" + sequence: the veth pair's host and namespace ends
)

// netnsBase is the private range the namespaces' /30 networks are taken from.
var netnsBase = netip.MustParsePrefix("10.213.0.0/16")

var netnsSeq atomic.Uint32

// Isolation is what isolated servers share: the hostname and the data directory path the server sees.
type Isolation struct {
	Hostname string // @@hostname
	// DataDir is an existing directory, the same for every server meant to look alike. The server's own data
	// directory is bind-mounted there inside its mount namespace; outside, the directory stays as it was.
	DataDir string
}

// IsolatedServer is a server in its own network, UTS and mount namespaces. Host is the namespace's address
// and Port IsolatedPort; DataDir is the data directory as the test process sees it.
type IsolatedServer struct {
	*Server
	Netns    string // the network namespace's name (ip netns)
	hostVeth string
	peer     netip.Addr // the host's end of the veth pair: where the test's connections come from
	iso      Isolation
}

// StartIsolated starts a server as Start does, but in namespaces of its own (see Isolation). It needs root
// and iproute2's ip, util-linux's unshare and mount.
func StartIsolated(ctx context.Context, o Options, iso Isolation) (*IsolatedServer, error) {
	if iso.Hostname == "" || !filepath.IsAbs(iso.DataDir) {
		return nil, errors.New("harness: an isolated server needs a hostname and an absolute data directory path")
	}
	if st, err := os.Stat(iso.DataDir); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("harness: isolated data directory path %s must be an existing directory", iso.DataDir)
	}
	for _, b := range []string{"ip", "unshare", "mount"} {
		if _, err := binary(b); err != nil {
			return nil, fmt.Errorf("harness: %s not found: install iproute2 and util-linux (make deps does it)", b)
		}
	}
	if o.BinlogFormat == "" {
		o.BinlogFormat = "ROW"
	}
	if o.BinlogRowImage == "" {
		o.BinlogRowImage = "FULL"
	}
	if o.ServerID == 0 {
		o.ServerID = nextServerID.Add(1)
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	tmpl, err := template(ctx)
	if err != nil {
		return nil, err
	}
	removeStaleNetns(ctx)
	is := &IsolatedServer{iso: iso}
	addr, err := is.createNetns(ctx)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", fmt.Sprintf("%s%d-", serverPrefix, os.Getpid()))
	if err != nil {
		is.removeNetns()
		return nil, fmt.Errorf("harness: server dir: %w", err)
	}
	is.Server = &Server{Host: addr.String(), Port: IsolatedPort, Dir: dir, DataDir: filepath.Join(dir, "data"),
		Socket: filepath.Join(dir, "mysqld.sock"), PIDFile: filepath.Join(dir, "mysqld.pid"),
		ErrorLog: filepath.Join(dir, "error.log"), opts: o, log: log}
	fail := func(err error) (*IsolatedServer, error) {
		_ = os.RemoveAll(dir)
		is.removeNetns()
		return nil, err
	}
	if out, err := exec.CommandContext(ctx, "cp", "-a", tmpl, is.DataDir).CombinedOutput(); err != nil {
		return fail(fmt.Errorf("harness: copy template datadir: %w: %s", err, out))
	}
	if err := is.launch(ctx); err != nil {
		return fail(err)
	}
	log.Info("isolated mariadbd started", "addr", is.Addr(), "netns", is.Netns, "hostname", iso.Hostname,
		"datadir", iso.DataDir, "dir", dir, "server_id", o.ServerID)
	return is, nil
}

// StartIsolatedT starts an isolated server for a test and stops it, and removes its namespaces, in t.Cleanup.
func StartIsolatedT(t testing.TB, o Options, iso Isolation) *IsolatedServer {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	s, err := StartIsolated(ctx, o, iso)
	if err != nil {
		t.Fatalf("start isolated mariadbd: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("mariadbd %s (netns %s) error log (last 40 lines):\n%s", s.Addr(), s.Netns, s.ErrorLogTail(40))
		}
		if err := s.Stop(); err != nil {
			t.Logf("stop isolated mariadbd %s: %v", s.Addr(), err)
		}
	})
	return s
}

// Stop shuts the server down, removes its directory and then its namespaces. It is idempotent.
func (s *IsolatedServer) Stop() error {
	err := s.Server.Stop()
	s.removeNetns()
	return err
}

// Restart shuts the server down gracefully and starts it again in the same namespaces.
func (s *IsolatedServer) Restart(ctx context.Context) error {
	s.mu.Lock()
	stopped := s.stopped
	s.mu.Unlock()
	if stopped {
		return ErrStopped
	}
	if err := s.shutdown(); err != nil {
		return err
	}
	return s.launch(ctx)
}

// StartAgain brings the server back after Kill, in the same namespaces.
func (s *IsolatedServer) StartAgain(ctx context.Context) error { return s.Restart(ctx) }

// launch is Server.launch with the command line run inside the namespaces: ip netns exec enters the network
// namespace, unshare makes private UTS and mount namespaces, and a shell sets the hostname and bind-mounts the
// data directory before it execs mariadbd, so the process Kill and Stop signal is mariadbd itself.
func (s *IsolatedServer) launch(ctx context.Context) error {
	bin, err := binary("mariadbd")
	if err != nil {
		return err
	}
	ip, err := binary("ip")
	if err != nil {
		return err
	}
	unshare, err := binary("unshare")
	if err != nil {
		return err
	}
	args := []string{"netns", "exec", s.Netns, unshare, "--uts", "--mount", "--propagation", "private", "--",
		"/bin/sh", "-c", `printf '%s' "$1" > /proc/sys/kernel/hostname && mount --bind "$2" "$3" && shift 3 && exec "$@"`,
		"sh", s.iso.Hostname, s.DataDir, s.iso.DataDir, bin}
	for _, a := range s.args() {
		switch {
		case strings.HasPrefix(a, "--bind-address="):
			a = "--bind-address=" + s.Host
		case strings.HasPrefix(a, "--datadir="), strings.HasPrefix(a, "--log-bin="):
			k, v, _ := strings.Cut(a, "=")
			if rest, ok := strings.CutPrefix(v, s.DataDir); ok {
				a = k + "=" + s.iso.DataDir + rest
			}
		}
		args = append(args, a)
	}
	// The template's root may connect from localhost only; the test connects from the host's end of the veth.
	initFile := filepath.Join(s.Dir, "isolated-init.sql")
	root := "'root'@'" + s.peer.String() + "'"
	init := "SET sql_log_bin = 0;\nCREATE USER IF NOT EXISTS " + root + ";\nGRANT ALL PRIVILEGES ON *.* TO " + root + " WITH GRANT OPTION;\n"
	if err := os.WriteFile(initFile, []byte(init), 0o600); err != nil {
		return fmt.Errorf("harness: init file: %w", err)
	}
	args = append(args, "--init-file="+initFile)
	// Every step from ip to mariadbd execs without forking, and none is set-user-ID, so the parent-death
	// signal of Server.startProcess reaches mariadbd.
	return s.startProcess(ctx, ip, args)
}

// createNetns makes the network namespace and the veth pair and returns the namespace's address. Choosing a
// free /30 and putting the host's end on it happen under an exclusive lock on a file every harness process
// shares, so two processes never pick the same network; the host's addresses are the record of what is taken.
func (s *IsolatedServer) createNetns(ctx context.Context) (netip.Addr, error) {
	seq := netnsSeq.Add(1)
	pid := os.Getpid()
	s.Netns = fmt.Sprintf("%s%d-%d", netnsPrefix, pid, seq)
	s.hostVeth = fmt.Sprintf("%s%dh%d", vethPrefix, pid, seq)
	nsVeth := fmt.Sprintf("%s%dn%d", vethPrefix, pid, seq)
	if len(s.hostVeth) > 15 || len(nsVeth) > 15 {
		return netip.Addr{}, fmt.Errorf("harness: interface name %s is longer than Linux allows", nsVeth)
	}
	unlock, err := lockFile(filepath.Join(os.TempDir(), "csmh-harness-netns.lock"))
	if err != nil {
		return netip.Addr{}, err
	}
	defer unlock()
	network, err := freeNetwork()
	if err != nil {
		return netip.Addr{}, err
	}
	hostAddr := network.Addr().Next()
	nsAddr := hostAddr.Next()
	s.peer = hostAddr
	steps := [][]string{
		{"netns", "add", s.Netns},
		{"link", "add", s.hostVeth, "type", "veth", "peer", "name", nsVeth},
		{"link", "set", nsVeth, "netns", s.Netns},
		{"addr", "add", netip.PrefixFrom(hostAddr, 30).String(), "dev", s.hostVeth},
		{"link", "set", s.hostVeth, "up"},
		{"-n", s.Netns, "addr", "add", netip.PrefixFrom(nsAddr, 30).String(), "dev", nsVeth},
		{"-n", s.Netns, "link", "set", nsVeth, "up"},
		{"-n", s.Netns, "link", "set", "lo", "up"},
	}
	for _, st := range steps {
		if err := ipCmd(ctx, st...); err != nil {
			s.removeNetns()
			return netip.Addr{}, err
		}
	}
	return nsAddr, nil
}

// removeNetns deletes the namespace (its veth end, and with it the pair, goes too) and the host's end, should
// the pair never have been split. Errors mean there was nothing left to remove.
func (s *IsolatedServer) removeNetns() {
	if s.Netns == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_ = ipCmd(ctx, "netns", "del", s.Netns)
	_ = ipCmd(ctx, "link", "del", s.hostVeth)
}

// freeNetwork returns a /30 of netnsBase that no interface of the host has an address in.
func freeNetwork() (netip.Prefix, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("harness: list the host's addresses: %w", err)
	}
	used := map[netip.Prefix]bool{}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok && netnsBase.Contains(ip.Unmap()) {
				p, _ := ip.Unmap().Prefix(30)
				used[p] = true
			}
		}
	}
	const networks = 1 << (32 - 16 - 2) // the /30s of a /16
	start := rand.IntN(networks)
	base := netnsBase.Addr().As4()
	for i := range networks {
		n := (start + i) % networks * 4
		a := netip.AddrFrom4([4]byte{base[0], base[1], byte(n >> 8), byte(n)})
		if p := netip.PrefixFrom(a, 30); !used[p] {
			return p, nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("harness: every /30 of %s is in use", netnsBase)
}

// removeStaleNetns deletes namespaces and host veth ends that harness processes which died left behind. A
// namespace whose owner is gone is kept while a process still runs in it (its mariadbd follows the owner by
// Pdeathsig, so that is a moment at most).
func removeStaleNetns(ctx context.Context) {
	if names, err := os.ReadDir("/run/netns"); err == nil {
		for _, e := range names {
			owner, ok := ownerPID(e.Name(), netnsPrefix)
			if !ok || alive(owner) {
				continue
			}
			out, err := ipOutput(ctx, "netns", "pids", e.Name())
			if err != nil || strings.TrimSpace(out) != "" {
				continue
			}
			_ = ipCmd(ctx, "netns", "del", e.Name())
		}
	}
	ifaces, err := net.Interfaces()
	if err != nil {
		return
	}
	for _, i := range ifaces {
		rest, ok := strings.CutPrefix(i.Name, vethPrefix)
		if !ok {
			continue
		}
		pid, _, ok := strings.Cut(rest, "h")
		if n, err := strconv.Atoi(pid); ok && err == nil && n > 0 && !alive(n) {
			_ = ipCmd(ctx, "link", "del", i.Name)
		}
	}
}

func ipCmd(ctx context.Context, args ...string) error {
	_, err := ipOutput(ctx, args...)
	return err
}

// ipOutput runs iproute2's ip and returns its standard output.
func ipOutput(ctx context.Context, args ...string) (string, error) {
	bin, err := binary("ip")
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	var errb strings.Builder
	cmd.Stderr = &errb
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("harness: ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return string(out), nil
}

// lockFile takes an exclusive flock on path, waiting for other holders; the returned func releases it.
func lockFile(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("harness: lock file: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("harness: lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}
