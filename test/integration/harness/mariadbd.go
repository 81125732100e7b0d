// Package harness starts real MariaDB servers for csmh-sync's tests, demo and benchmarks: each on a free
// loopback port in a temporary directory, binlog on (ROW, FULL image, GTID strict mode), torn down afterwards.
// It also loads the edX schema, generates realistic history rows and drives a live write load.
package harness

import (
	"bytes"
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

// Options configure one server.
type Options struct {
	BinlogOff      bool     // start without --log-bin
	BinlogFormat   string   // default ROW
	BinlogRowImage string   // default FULL
	ServerID       uint32   // 0 = a unique id per process
	GTIDDomainID   uint32   // default 0
	ExtraArgs      []string // appended mariadbd arguments
	Log            *slog.Logger
}

// Server is one running mariadbd.
type Server struct {
	Port    int
	Dir     string
	opts    Options
	args    []string
	cmd     *exec.Cmd
	exited  chan struct{}
	mu      sync.Mutex
	stopped bool
}

var (
	nextServerID atomic.Uint32
	templateOnce sync.Once
	templateDir  string
	templateErr  error
)

func init() { nextServerID.Store(100) }

// Binaries are looked up on PATH and in /usr/sbin, where Debian installs mariadbd.
func binary(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/sbin", "/usr/bin", "/usr/local/bin"} {
		if p := filepath.Join(d, name); fileExists(p) {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found: install Debian's mariadb-server (make deps does it)", name)
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// template runs mariadb-install-db once per process; every server starts from a copy of it.
func template(ctx context.Context) (string, error) {
	templateOnce.Do(func() {
		bin, err := binary("mariadb-install-db")
		if err != nil {
			templateErr = err
			return
		}
		dir, err := os.MkdirTemp("", "csmh-harness-template-")
		if err != nil {
			templateErr = err
			return
		}
		cmd := exec.CommandContext(ctx, bin, "--no-defaults", "--datadir="+dir, "--user=root",
			"--auth-root-authentication-method=normal", "--skip-test-db", "--skip-name-resolve")
		if out, err := cmd.CombinedOutput(); err != nil {
			os.RemoveAll(dir)
			templateErr = fmt.Errorf("mariadb-install-db: %v: %s", err, tail(string(out), 20))
			return
		}
		templateDir = dir
	})
	return templateDir, templateErr
}

// Cleanup removes the template data directory; TestMain calls it after the tests.
func Cleanup() {
	if templateDir != "" {
		os.RemoveAll(templateDir)
	}
}

// Start launches a server and waits until it answers.
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
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	tmpl, err := template(ctx)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "csmh-mariadbd-")
	if err != nil {
		return nil, err
	}
	data := filepath.Join(dir, "data")
	if out, err := exec.CommandContext(ctx, "cp", "-a", tmpl, data).CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("copy template datadir: %v: %s", err, out)
	}
	s := &Server{Dir: dir, opts: o}
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		if s.Port, err = freePort(); err != nil {
			return nil, err
		}
		if lastErr = s.launch(ctx); lastErr == nil {
			return s, nil
		}
		if !strings.Contains(lastErr.Error(), "in use") {
			break
		}
	}
	os.RemoveAll(dir)
	return nil, lastErr
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func (s *Server) buildArgs() []string {
	o := s.opts
	a := []string{"--no-defaults", "--user=root", "--datadir=" + filepath.Join(s.Dir, "data"),
		"--port=" + strconv.Itoa(s.Port), "--bind-address=127.0.0.1", "--skip-name-resolve",
		"--socket=" + filepath.Join(s.Dir, "mysqld.sock"), "--pid-file=" + filepath.Join(s.Dir, "mysqld.pid"),
		"--log-error=" + filepath.Join(s.Dir, "error.log"), "--server-id=" + strconv.FormatUint(uint64(o.ServerID), 10),
		"--innodb-buffer-pool-size=256M", "--innodb-log-file-size=256M", "--max-allowed-packet=64M",
		"--character-set-server=utf8mb4", "--collation-server=utf8mb4_general_ci",
		"--gtid-strict-mode=1", "--gtid-domain-id=" + strconv.FormatUint(uint64(o.GTIDDomainID), 10),
		"--max-connections=300", "--skip-external-locking",
	}
	if !o.BinlogOff {
		a = append(a, "--log-bin="+filepath.Join(s.Dir, "data", "mysql-bin"), "--binlog-format="+o.BinlogFormat,
			"--binlog-row-image="+o.BinlogRowImage, "--log-slave-updates")
	}
	return append(a, o.ExtraArgs...)
}

// launch starts mariadbd and waits (≤60 s) until it accepts connections.
func (s *Server) launch(ctx context.Context) error {
	bin, err := binary("mariadbd")
	if err != nil {
		return err
	}
	s.args = s.buildArgs()
	cmd := exec.Command(bin, s.args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start mariadbd: %w", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	s.mu.Lock()
	s.cmd, s.exited, s.stopped = cmd, exited, false
	s.mu.Unlock()
	deadline := time.Now().Add(60 * time.Second)
	db, err := sql.Open("mysql", s.DSN(""))
	if err != nil {
		return err
	}
	defer db.Close()
	for {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		err := db.PingContext(pctx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("mariadbd exited during startup: %s %s", out.String(), s.ErrorLogTail(30))
		case <-ctx.Done():
			s.Kill()
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.Kill()
			return fmt.Errorf("mariadbd not ready within 60s: %s", s.ErrorLogTail(30))
		}
	}
}

// Addr is host:port.
func (s *Server) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.Port) }

// DSN returns a go-sql-driver DSN for root (no password in the sandbox).
func (s *Server) DSN(db string) string { return s.UserDSN("root", "", db) }

// UserDSN returns a DSN for another user.
func (s *Server) UserDSN(user, pass, db string) string {
	c := mysql.NewConfig()
	c.User, c.Passwd, c.Net, c.Addr, c.DBName = user, pass, "tcp", s.Addr(), db
	c.Timeout = 5 * time.Second
	c.MultiStatements = true
	return c.FormatDSN()
}

// Open returns a handle as root.
func (s *Server) Open(db string) (*sql.DB, error) {
	h, err := sql.Open("mysql", s.DSN(db))
	if err != nil {
		return nil, err
	}
	h.SetMaxOpenConns(32)
	return h, nil
}

// Kill stops the process with SIGKILL and keeps the data directory (Restart brings it back).
func (s *Server) Kill() error {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return nil
	}
	_ = cmd.Process.Kill()
	<-exited
	return nil
}

// shutdown stops the process gracefully (SIGTERM, then SIGKILL after 30 s).
func (s *Server) shutdown() error {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return nil
	}
	select {
	case <-exited:
		return nil
	default:
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
	}
	return nil
}

// Restart stops the server (keeping its data) and starts it again on the same port.
func (s *Server) Restart(ctx context.Context) error {
	if err := s.shutdown(); err != nil {
		return err
	}
	return s.launch(ctx)
}

// StartAgain starts a killed server again on the same port.
func (s *Server) StartAgain(ctx context.Context) error { return s.launch(ctx) }

// Stop shuts the server down and removes its directory. It is idempotent.
func (s *Server) Stop() error {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return nil
	}
	s.stopped = true
	s.mu.Unlock()
	err := s.shutdown()
	return errors.Join(err, os.RemoveAll(s.Dir))
}

// ErrorLogTail returns the last n lines of the server's error log.
func (s *Server) ErrorLogTail(n int) string {
	b, _ := os.ReadFile(filepath.Join(s.Dir, "error.log"))
	return tail(string(b), n)
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
