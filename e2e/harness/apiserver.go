package harness

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"
)

// APIServer is a Kubernetes API server of a test's own (etcd and
// kube-apiserver from the harness's binaries, on free loopback ports), for
// tests that stop it under a running build: the harness's shared one must
// stay up for the others.
type APIServer struct {
	Kubeconfig string
	dir, bin   string
	apiPort    int
	etcd, api  *exec.Cmd
	apiArgs    []string
}

const apiToken = "e2e-admin-token"

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// StartAPIServer starts etcd and kube-apiserver in dir.
func (h *Harness) StartAPIServer(dir string) (*APIServer, error) {
	if h.KubeBin == "" {
		return nil, fmt.Errorf("%w: the env file names no Kubernetes binaries (STAGEHAND_TEST_KUBE_BIN)", ErrNotStarted)
	}
	a := &APIServer{dir: dir, bin: h.KubeBin}
	var ports [3]int
	for i := range ports {
		p, err := freePort()
		if err != nil {
			return nil, err
		}
		ports[i] = p
	}
	etcdPort, peerPort := ports[0], ports[1]
	a.apiPort = ports[2]
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return nil, err
	}
	files := map[string][]byte{
		"sa.key":     pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}),
		"sa.pub":     pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}),
		"tokens.csv": []byte(apiToken + `,e2e-admin,1,"system:masters"` + "\n"),
		"kubeconfig": []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster: {server: "https://127.0.0.1:%d", insecure-skip-tls-verify: true}
users:
- name: e2e-admin
  user: {token: %s}
contexts:
- name: e2e
  context: {cluster: e2e, user: e2e-admin}
current-context: e2e
`, a.apiPort, apiToken)),
	}
	if err := os.MkdirAll(filepath.Join(dir, "certs"), 0o700); err != nil {
		return nil, err
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			return nil, err
		}
	}
	a.Kubeconfig = filepath.Join(dir, "kubeconfig")
	etcdURL := "http://127.0.0.1:" + strconv.Itoa(etcdPort)
	peerURL := "http://127.0.0.1:" + strconv.Itoa(peerPort)
	a.etcd, err = a.start("etcd", filepath.Join(a.bin, "etcd"), "--name", "e2e", "--data-dir", filepath.Join(dir, "etcd-data"),
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL, "--initial-cluster", "e2e="+peerURL, "--log-level", "warn")
	if err != nil {
		return nil, err
	}
	if err := waitFor(etcdURL+"/health", "", 30*time.Second); err != nil {
		a.Close()
		return nil, fmt.Errorf("etcd: %w (log %s)", err, filepath.Join(dir, "etcd.log"))
	}
	a.apiArgs = []string{"--etcd-servers=" + etcdURL, "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(a.apiPort), "--endpoint-reconciler-type=none", "--cert-dir=" + filepath.Join(dir, "certs"),
		"--service-cluster-ip-range=10.0.0.0/24", "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + filepath.Join(dir, "sa.pub"), "--service-account-signing-key-file=" + filepath.Join(dir, "sa.key"),
		"--token-auth-file=" + filepath.Join(dir, "tokens.csv"), "--authorization-mode=RBAC"}
	if err := a.StartAPI(); err != nil {
		a.Close()
		return nil, err
	}
	return a, nil
}

func (a *APIServer) start(name, exe string, args ...string) (*exec.Cmd, error) {
	log, err := os.OpenFile(filepath.Join(a.dir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, args...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() { _ = cmd.Wait(); log.Close() }()
	return cmd, nil
}

// StartAPI starts kube-apiserver (again) and waits until it is ready.
func (a *APIServer) StartAPI() error {
	var err error
	if a.api, err = a.start("kube-apiserver", filepath.Join(a.bin, "kube-apiserver"), a.apiArgs...); err != nil {
		return err
	}
	if err := waitFor(fmt.Sprintf("https://127.0.0.1:%d/readyz", a.apiPort), apiToken, time.Minute); err != nil {
		return fmt.Errorf("kube-apiserver: %w (log %s)", err, filepath.Join(a.dir, "kube-apiserver.log"))
	}
	return nil
}

// StopAPI kills kube-apiserver (etcd and its data stay) and waits until
// its port is closed.
func (a *APIServer) StopAPI() {
	if a.api == nil || a.api.Process == nil {
		return
	}
	_ = a.api.Process.Kill()
	addr := "127.0.0.1:" + strconv.Itoa(a.apiPort)
	for i := 0; i < 100; i++ {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err != nil {
			break
		}
		c.Close()
		time.Sleep(100 * time.Millisecond)
	}
	a.api = nil
}

// Close stops both.
func (a *APIServer) Close() {
	a.StopAPI()
	if a.etcd != nil && a.etcd.Process != nil {
		_ = a.etcd.Process.Kill()
	}
}

func waitFor(url, token string, limit time.Duration) error {
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready after %s", url, limit)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
