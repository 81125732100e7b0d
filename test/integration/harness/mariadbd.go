// Package harness starts real MariaDB servers for csmh-sync's tests, demo and benchmarks: each on a free
// loopback port in a temporary directory, binlog on (ROW, FULL image, GTID strict mode), torn down afterwards.
// It also loads the edX schema, generates realistic history rows and drives a live write load.
//
// The servers never read /etc/mysql (--no-defaults comes first), never use /var/lib/mysql and never bind
// anything but 127.0.0.1 on a port the kernel handed out, so a system server on 3306 is left alone.
package harness

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-sql-driver/mysql"
)

const (
	// Host is the only address sandbox servers listen on.
	Host = "127.0.0.1"

	readyTimeout    = 60 * time.Second
	shutdownTimeout = 60 * time.Second
	startAttempts   = 5
)

// ErrStopped is returned when a server that Stop has removed is asked to run again.
var ErrStopped = errors.New("harness: server was stopped and its directory removed")

// Options configure one server.
type Options struct {
	BinlogOff      bool      // start without --log-bin
	BinlogFormat   string    // default ROW
	BinlogRowImage string    // default FULL
	ServerID       uint32    // 0 = a unique id per process
	GTIDDomainID   uint32    // default 0
	ExtraArgs      []string  // appended mariadbd arguments, e.g. "--innodb-autoinc-lock-mode=2"
	TLS            *TLSFiles // serve TLS with these files (MakeTLS): ssl_ca, ssl_cert, ssl_key; nil = no TLS
	Log            *slog.Logger
}

// Server is one mariadbd with its own directory. Its exported fields are fixed for its lifetime: Restart
// comes back on the same port and data directory.
type Server struct {
	Host     string // always 127.0.0.1
	Port     int
	Dir      string // the temporary directory holding everything below
	DataDir  string
	Socket   string
	PIDFile  string
	ErrorLog string

	opts Options
	log  *slog.Logger

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{} // closed when cmd has been waited for
	stopped bool
}

var nextServerID atomic.Uint32

func init() { nextServerID.Store(100) }

// The template data directory: mariadb-install-db takes seconds, copying its output takes milliseconds.
var (
	templateMu  sync.Mutex
	templateDir string
)

// binary finds name on PATH or in the directories Debian installs MariaDB into.
func binary(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/sbin", "/usr/bin", "/usr/local/bin"} {
		p := filepath.Join(d, name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("harness: %s not found: install Debian's mariadb-server (make deps does it)", name)
}

// template runs mariadb-install-db once per process. A failed attempt (a cancelled ctx, say) is not
// remembered, so the next Start tries again.
func template(ctx context.Context) (string, error) {
	templateMu.Lock()
	defer templateMu.Unlock()
	if templateDir != "" {
		return templateDir, nil
	}
	bin, err := binary("mariadb-install-db")
	if err != nil {
		return "", err
	}
	removeStale()
	// A second attempt in a fresh directory: once in a run of make test (2026-12-06) the bootstrap failed with
	// nothing but mariadb-install-db's closing advice to show for it. The failed attempt's own error lines are
	// printed, so a cause that returns is seen.
	var last error
	for attempt := 1; attempt <= 2; attempt++ {
		dir, err := os.MkdirTemp("", fmt.Sprintf("%s%d-", templatePrefix, os.Getpid()))
		if err != nil {
			return "", fmt.Errorf("harness: template dir: %w", err)
		}
		cmd := exec.CommandContext(ctx, bin, "--no-defaults", "--datadir="+dir, "--user=root",
			"--auth-root-authentication-method=normal", "--skip-test-db", "--skip-name-resolve")
		out, err := cmd.CombinedOutput()
		if err == nil {
			templateDir = dir
			return dir, nil
		}
		_ = os.RemoveAll(dir)
		last = fmt.Errorf("harness: mariadb-install-db: %w:\n%s", err, errorsAndTail(string(out), 20))
		if ctx.Err() != nil {
			break
		}
		fmt.Fprintf(os.Stderr, "%v\n(attempt %d of 2)\n", last, attempt)
	}
	return "", last
}

// errorsAndTail is what a failed command's output says: the lines that name an error before its last n
// lines, then those n.
func errorsAndTail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	cut := max(len(lines)-n, 0)
	var keep []string
	for _, l := range lines[:cut] {
		if strings.Contains(strings.ToLower(l), "error") {
			keep = append(keep, l)
		}
	}
	return strings.Join(append(keep, lines[cut:]...), "\n")
}

// Start copies the template into a fresh directory, launches mariadbd on a free port and waits until it
// answers. A port taken between choosing and binding it is retried on another one.
func Start(ctx context.Context, o Options) (*Server, error) {
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
	dir, err := os.MkdirTemp("", fmt.Sprintf("%s%d-", serverPrefix, os.Getpid()))
	if err != nil {
		return nil, fmt.Errorf("harness: server dir: %w", err)
	}
	s := &Server{Host: Host, Dir: dir, DataDir: filepath.Join(dir, "data"), Socket: filepath.Join(dir, "mysqld.sock"),
		PIDFile: filepath.Join(dir, "mysqld.pid"), ErrorLog: filepath.Join(dir, "error.log"), opts: o, log: log}
	if out, err := exec.CommandContext(ctx, "cp", "-a", tmpl, s.DataDir).CombinedOutput(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("harness: copy template datadir: %w: %s", err, out)
	}
	var lastErr error
	for attempt := 1; attempt <= startAttempts; attempt++ {
		if s.Port, err = freePort(); err != nil {
			_ = os.RemoveAll(dir)
			return nil, err
		}
		if lastErr = s.launch(ctx); lastErr == nil {
			log.Info("mariadbd started", "addr", s.Addr(), "dir", dir, "server_id", o.ServerID, "binlog", !o.BinlogOff)
			return s, nil
		}
		if ctx.Err() != nil || !strings.Contains(lastErr.Error(), "in use") {
			break
		}
		log.Warn("mariadbd port taken, retrying on another", "port", s.Port, "attempt", attempt)
	}
	_ = os.RemoveAll(dir)
	return nil, lastErr
}

// freePort asks the kernel for a free loopback port. Another process may take it before mariadbd binds
// it; Start retries then.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", Host+":0")
	if err != nil {
		return 0, fmt.Errorf("harness: free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func (s *Server) args() []string {
	o := s.opts
	a := []string{"--no-defaults", "--user=root", "--datadir=" + s.DataDir, "--tmpdir=" + s.Dir,
		"--port=" + strconv.Itoa(s.Port), "--bind-address=" + Host, "--skip-name-resolve",
		"--socket=" + s.Socket, "--pid-file=" + s.PIDFile, "--log-error=" + s.ErrorLog,
		"--server-id=" + strconv.FormatUint(uint64(o.ServerID), 10),
		"--innodb-buffer-pool-size=256M", "--innodb-log-file-size=256M", "--max-allowed-packet=64M",
		"--innodb-flush-log-at-trx-commit=1", "--sync-binlog=1",
		"--character-set-server=utf8mb4", "--collation-server=utf8mb4_general_ci",
		"--gtid-strict-mode=1", "--gtid-domain-id=" + strconv.FormatUint(uint64(o.GTIDDomainID), 10),
		"--max-connections=300", "--skip-external-locking",
	}
	if !o.BinlogOff {
		a = append(a, "--log-bin="+filepath.Join(s.DataDir, "mysql-bin"), "--binlog-format="+o.BinlogFormat,
			"--binlog-row-image="+o.BinlogRowImage, "--log-slave-updates")
	}
	a = append(a, o.TLS.args()...)
	return append(a, o.ExtraArgs...)
}

// launch starts mariadbd and polls (≤60 s) until it accepts connections. If the process exits first, the
// error carries the error log's tail.
func (s *Server) launch(ctx context.Context) error {
	bin, err := binary("mariadbd")
	if err != nil {
		return err
	}
	return s.startProcess(ctx, bin, s.args())
}

// startProcess runs bin with args as the server's process and polls (≤60 s) until it accepts connections.
func (s *Server) startProcess(ctx context.Context, bin string, args []string) error {
	// Output before the error log is open (bad arguments, say) goes to console.log; passing an *os.File
	// lets the child write it directly, with no copying goroutine to wait for.
	console, err := os.OpenFile(filepath.Join(s.Dir, "console.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("harness: console log: %w", err)
	}
	cmd := exec.Command(bin, args...) // not CommandContext: the server outlives the ctx that started it
	cmd.Stdout, cmd.Stderr = console, console
	// Pdeathsig kills the server when the OS thread that forked it ends. The Go runtime ends a thread only
	// when a goroutine exits while locked to it, which the harness never does, so in practice the signal
	// comes when the test binary dies, however it dies. Setpgid keeps a terminal's Ctrl-C for the tests.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	err = cmd.Start()
	_ = console.Close()
	if err != nil {
		return fmt.Errorf("harness: start mariadbd: %w", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	s.mu.Lock()
	s.cmd, s.exited = cmd, exited
	s.mu.Unlock()

	if err := s.waitReady(ctx, exited); err != nil {
		_ = s.Kill()
		return err
	}
	return nil
}

func (s *Server) waitReady(ctx context.Context, exited <-chan struct{}) error {
	db, err := sql.Open("mysql", s.DSN(""))
	if err != nil {
		return fmt.Errorf("harness: %w", err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
		err := db.PingContext(pctx)
		pcancel()
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			console, _ := os.ReadFile(filepath.Join(s.Dir, "console.log"))
			return fmt.Errorf("harness: mariadbd on port %d exited during startup: %s\n%s",
				s.Port, tail(string(console), 10), s.ErrorLogTail(30))
		case <-ctx.Done():
			return fmt.Errorf("harness: mariadbd on port %d not ready (last ping: %v): %w\n%s",
				s.Port, err, ctx.Err(), s.ErrorLogTail(30))
		case <-tick.C:
		}
	}
}

// Addr is host:port.
func (s *Server) Addr() string { return net.JoinHostPort(s.Host, strconv.Itoa(s.Port)) }

// DSN returns a go-sql-driver DSN for root, who has no password in the sandbox.
func (s *Server) DSN(db string) string { return s.UserDSN("root", "", db) }

// UserDSN returns a go-sql-driver DSN for another user. Multi-statement text is allowed.
func (s *Server) UserDSN(user, pass, db string) string {
	c := mysql.NewConfig()
	c.User, c.Passwd, c.Net, c.Addr, c.DBName = user, pass, "tcp", s.Addr(), db
	c.Timeout = 5 * time.Second
	c.MultiStatements = true
	return c.FormatDSN()
}

// Open returns a pool as root on db ("" for none).
func (s *Server) Open(db string) (*sql.DB, error) {
	h, err := sql.Open("mysql", s.DSN(db))
	if err != nil {
		return nil, fmt.Errorf("harness: open %s: %w", s.Addr(), err)
	}
	h.SetMaxOpenConns(32)
	return h, nil
}

// Kill sends SIGKILL and waits for the process; the data directory stays (Restart or StartAgain bring the
// server back, through crash recovery).
func (s *Server) Kill() error {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.mu.Unlock()
	if cmd == nil {
		return nil
	}
	select {
	case <-exited:
		return nil
	default:
	}
	if err := cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("harness: kill mariadbd on port %d: %w", s.Port, err)
	}
	<-exited
	s.log.Info("mariadbd killed", "addr", s.Addr())
	return nil
}

// Freeze stops the server process (SIGSTOP) without closing anything: its connections stay open and nothing
// answers, as when a server hangs, until Thaw.
func (s *Server) Freeze() error { return s.signal(syscall.SIGSTOP) }

// Thaw resumes a frozen server (SIGCONT).
func (s *Server) Thaw() error { return s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) error {
	s.mu.Lock()
	cmd := s.cmd
	s.mu.Unlock()
	if cmd == nil {
		return fmt.Errorf("harness: mariadbd on port %d is not running", s.Port)
	}
	if err := cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("harness: %s to mariadbd on port %d: %w", sig, s.Port, err)
	}
	s.log.Info("mariadbd signalled", "addr", s.Addr(), "signal", sig.String())
	return nil
}

// shutdown stops the process gracefully: SIGTERM, then SIGKILL if it has not exited within the deadline.
func (s *Server) shutdown() error {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.mu.Unlock()
	if cmd == nil {
		return nil
	}
	select {
	case <-exited:
		return nil
	default:
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("harness: SIGTERM mariadbd on port %d: %w", s.Port, err)
	}
	_ = cmd.Process.Signal(syscall.SIGCONT) // a frozen server (Freeze) acts on the SIGTERM only once it runs again
	timer := time.NewTimer(shutdownTimeout)
	defer timer.Stop()
	select {
	case <-exited:
		return nil
	case <-timer.C:
		s.log.Warn("mariadbd did not shut down in time, killing it", "addr", s.Addr(), "after", shutdownTimeout)
		return s.Kill()
	}
}

// Restart shuts the server down gracefully (if it is running), keeping its data, and starts it again on
// the same port, waiting until it answers.
func (s *Server) Restart(ctx context.Context) error {
	s.mu.Lock()
	stopped := s.stopped
	s.mu.Unlock()
	if stopped {
		return ErrStopped
	}
	if err := s.shutdown(); err != nil {
		return err
	}
	if err := s.launch(ctx); err != nil {
		return err
	}
	s.log.Info("mariadbd restarted", "addr", s.Addr())
	return nil
}

// Shutdown stops the server gracefully and keeps its data: StartAgain brings it back, on the same port.
func (s *Server) Shutdown() error { return s.shutdown() }

// StartAgain brings back a server after Kill or Shutdown; it is Restart under the name a crash test reads best
// with.
func (s *Server) StartAgain(ctx context.Context) error { return s.Restart(ctx) }

// Stop shuts the server down gracefully and removes its directory. It is idempotent.
func (s *Server) Stop() error {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return nil
	}
	s.stopped = true
	s.mu.Unlock()
	err := s.shutdown()
	s.log.Info("mariadbd stopped", "addr", s.Addr())
	return errors.Join(err, os.RemoveAll(s.Dir))
}

// ErrorLogTail returns the last n lines of the server's error log ("" if there is none yet).
func (s *Server) ErrorLogTail(n int) string {
	b, err := os.ReadFile(s.ErrorLog)
	if err != nil {
		return ""
	}
	return tail(string(b), n)
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
