// Package deploy_test checks the deployment examples against the code they
// deploy: the Kubernetes example's campaign and keys load through the
// node's own loader, its StatefulSet passes only flags `redrain serve`
// takes, and the Dockerfile's build line builds a binary that runs.
package deploy_test

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"go.yaml.in/yaml/v4"

	"redrain/adminauth"
	"redrain/campaign"
)

// testVersion is the VERSION build argument the test builds with.
const testVersion = "v0.0.0-deploy-test"

// binary builds redrain with the Dockerfile's build line, once.
var binary = sync.OnceValues(func() (string, error) {
	raw, err := os.ReadFile("../Dockerfile")
	if err != nil {
		return "", err
	}
	line, err := buildLine(string(raw))
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp("", "redrain-deploy-test")
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "redrain")
	// The line as the Dockerfile runs it, in the module's root, with the
	// build argument set and the output moved out of the image's path.
	line = strings.ReplaceAll(line, "-o /out/redrain", "-o "+out)
	cmd := exec.Command("sh", "-c", line)
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "VERSION="+testVersion)
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("%s: %v\n%s", line, err, msg)
	}
	return out, nil
})

// buildLine returns the command of the Dockerfile's RUN that builds the
// binary, and checks that it writes /out/redrain, which the runtime stage
// copies.
func buildLine(dockerfile string) (string, error) {
	var runs []string
	for _, l := range strings.Split(dockerfile, "\n") {
		if cmd, ok := strings.CutPrefix(strings.TrimSpace(l), "RUN "); ok && strings.Contains(cmd, "go build") {
			runs = append(runs, cmd)
		}
	}
	if len(runs) != 1 {
		return "", fmt.Errorf("Dockerfile: %d RUN lines with go build, want one: %q", len(runs), runs)
	}
	if strings.HasSuffix(runs[0], `\`) {
		return "", errors.New("Dockerfile: the go build RUN continues on the next line; keep it one line")
	}
	for _, want := range []string{"-trimpath", "-X main.version=${VERSION}", "-o /out/redrain", "./cmd/redrain", "CGO_ENABLED=0"} {
		if !strings.Contains(runs[0], want) {
			return "", fmt.Errorf("Dockerfile: the build line %q lacks %q", runs[0], want)
		}
	}
	if !strings.Contains(dockerfile, "COPY --from=build /out/redrain ") {
		return "", errors.New("Dockerfile: the runtime stage does not copy /out/redrain")
	}
	return runs[0], nil
}

func built(t *testing.T) string {
	t.Helper()
	bin, err := binary()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {}) // the binary is shared by the tests; its temp dir stays
	return bin
}

// TestDockerfile builds with the Dockerfile's own line and runs the result;
// and checks what the runtime stage promises: a non-root user, the three
// ports, `redrain serve` as the entrypoint.
func TestDockerfile(t *testing.T) {
	bin := built(t)
	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil || !strings.Contains(string(out), testVersion) {
		t.Fatalf("%s --version: %v: %q, want it to name %s", bin, err, out, testVersion)
	}
	t.Logf("%s", bytes.TrimSpace(out))
	raw, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	df := string(raw)
	for _, want := range []string{
		"FROM golang:1.26 AS build",
		"\nUSER 65532:65532\n",
		"\nEXPOSE 8080 8081 9200\n",
		`ENTRYPOINT ["/usr/local/bin/redrain", "serve"]`,
	} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	// The default arguments are serve's flags.
	if m := regexp.MustCompile(`(?m)^CMD (\[.*\])$`).FindStringSubmatch(df); m != nil {
		var args []string
		if err := yaml.Unmarshal([]byte(m[1]), &args); err != nil {
			t.Fatalf("CMD %s: %v", m[1], err)
		}
		checkServeFlags(t, bin, "Dockerfile CMD", args, nil)
	}
	ignore, err := os.ReadFile("../.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(ignore), ".git\n") {
		t.Error(".dockerignore does not leave .git out of the build context")
	}
}

// manifest is the Kubernetes example, one object per document.
func manifest(t *testing.T) []map[string]any {
	t.Helper()
	f, err := os.Open("kubernetes/redrain.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var docs []map[string]any
	dec := yaml.NewDecoder(f)
	for {
		var d map[string]any
		err := dec.Decode(&d)
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatalf("kubernetes/redrain.yaml: %v", err)
		}
		if d != nil {
			docs = append(docs, d)
		}
	}
}

// object returns the manifest's object of kind and name.
func object(t *testing.T, docs []map[string]any, kind, name string) map[string]any {
	t.Helper()
	for _, d := range docs {
		if d["kind"] == kind && dig[string](d, "metadata", "name") == name {
			return d
		}
	}
	t.Fatalf("kubernetes/redrain.yaml: no %s %s", kind, name)
	return nil
}

// dig follows keys (string: a map key, int: a list index) into v.
func dig[T any](v any, keys ...any) T {
	for _, k := range keys {
		switch k := k.(type) {
		case string:
			m, _ := v.(map[string]any)
			v = m[k]
		case int:
			l, _ := v.([]any)
			if k >= len(l) {
				v = nil
			} else {
				v = l[k]
			}
		}
	}
	out, _ := v.(T)
	return out
}

// mounted returns the file at the container path p: the key of the
// ConfigMap or Secret whose volume is mounted over p's directory, and that
// object's kind and name.
func mounted(t *testing.T, docs []map[string]any, pod map[string]any, container map[string]any, p string) (kind, name, text string) {
	t.Helper()
	dir, file := path.Split(p)
	var volume string
	for _, m := range dig[[]any](container, "volumeMounts") {
		if strings.TrimSuffix(dig[string](m, "mountPath"), "/")+"/" == dir {
			volume = dig[string](m, "name")
		}
	}
	if volume == "" {
		t.Fatalf("%s: no volume mounted at %s", p, dir)
	}
	for _, v := range dig[[]any](pod, "volumes") {
		if dig[string](v, "name") != volume {
			continue
		}
		if cm := dig[string](v, "configMap", "name"); cm != "" {
			return "ConfigMap", cm, dig[string](object(t, docs, "ConfigMap", cm), "data", file)
		}
		if s := dig[string](v, "secret", "secretName"); s != "" {
			return "Secret", s, dig[string](object(t, docs, "Secret", s), "stringData", file)
		}
	}
	t.Fatalf("%s: volume %s is neither a ConfigMap nor a Secret of the manifest", p, volume)
	return
}

// placeholder is a key the example leaves for the operator: ID:REPLACE-...
var placeholder = regexp.MustCompile(`"([A-Za-z0-9.]+:)?REPLACE-[A-Za-z0-9-]*"`)

func secret() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// TestKubernetesCampaignLoads: the StatefulSet's --config is a ConfigMap's
// file and its --keys a Secret's; with the Secret's placeholders filled in
// as its comment says (a `redrain keygen` key per id), and with the keys
// deploy/kubernetes/keys.sh makes, the node's loader accepts them, and the
// keys pass the checks a node on real backends makes.
func TestKubernetesCampaignLoads(t *testing.T) {
	docs := manifest(t)
	set := object(t, docs, "StatefulSet", "redrain")
	pod := dig[map[string]any](set, "spec", "template", "spec")
	c := dig[map[string]any](pod, "containers", 0)
	flags := map[string]string{}
	for _, a := range dig[[]any](c, "args") {
		if s, ok := a.(string); ok {
			name, val, _ := strings.Cut(strings.TrimLeft(s, "-"), "=")
			flags[name] = val
		}
	}
	kind, name, config := mounted(t, docs, pod, c, flags["config"])
	if kind != "ConfigMap" || config == "" {
		t.Fatalf("--config=%s: %s %s holds %q; want a ConfigMap's campaign", flags["config"], kind, name, config)
	}
	kind, name, keys := mounted(t, docs, pod, c, flags["keys"])
	if kind != "Secret" || keys == "" {
		t.Fatalf("--keys=%s: %s %s holds %q; want a Secret's keys", flags["keys"], kind, name, keys)
	}
	if strings.Contains(config, "_keys") || strings.Contains(config, "draw_salt") {
		t.Errorf("the ConfigMap's campaign holds keys; they belong in the Secret:\n%s", config)
	}
	dir := t.TempDir()
	configPath := filepath.Join(dir, "campaign.json")
	if err := os.WriteFile(configPath, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	load := func(what, keys string) {
		t.Helper()
		keysPath := filepath.Join(dir, "keys.json")
		if err := os.WriteFile(keysPath, []byte(keys), 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := campaign.LoadWithKeys(configPath, keysPath)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		cfg := c.Config
		if len(c.Seeds) == 0 || len(cfg.AdminKeys) == 0 || len(cfg.AppKeys) == 0 || cfg.DrawSalt == "" {
			t.Errorf("%s: %d activities, admin keys %q, app keys %q, draw salt %q", what, len(c.Seeds), cfg.AdminKeys, cfg.AppKeys, cfg.DrawSalt)
		}
		if pub := cfg.PublicTokenKeys(); len(pub) > 0 {
			t.Errorf("%s: public token keys %v", what, pub)
		}
		for _, s := range append(slices.Clone(cfg.AdminKeys), cfg.AppKeys...) {
			k, err := adminauth.ParseKey(s)
			if err != nil || adminauth.IsDevKey(k) {
				t.Errorf("%s: key %q: %v (or the public development key)", what, s, err)
			}
		}
	}
	// As the Secret's comment says: each placeholder replaced.
	if !placeholder.MatchString(keys) {
		t.Fatalf("the Secret's keys have no REPLACE- placeholder; an example must not ship keys:\n%s", keys)
	}
	filled := placeholder.ReplaceAllStringFunc(keys, func(p string) string {
		id, _, _ := strings.Cut(strings.Trim(p, `"`), "REPLACE-")
		return `"` + id + secret() + `"`
	})
	load("the Secret with its placeholders filled in", filled)
	// As deploy/README.md says: keys.sh with the built binary.
	out, err := exec.Command("kubernetes/keys.sh", built(t)).Output()
	if err != nil {
		t.Fatalf("kubernetes/keys.sh: %v", err)
	}
	load("kubernetes/keys.sh's keys", string(out))
	// The placeholders as shipped are refused.
	if _, err := campaign.LoadWithKeys(configPath, writeFile(t, dir, "shipped.json", keys)); err == nil {
		t.Error("the Secret's keys load with their placeholders in; a node must refuse them")
	}
}

func writeFile(t *testing.T, dir, name, text string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestKubernetesArgsAreServeFlags: the container has no command (the
// image's entrypoint is `redrain serve`), and every arg is a flag that
// `redrain serve -h` lists, each $(VAR) in them defined for the container.
func TestKubernetesArgsAreServeFlags(t *testing.T) {
	docs := manifest(t)
	set := object(t, docs, "StatefulSet", "redrain")
	c := dig[map[string]any](set, "spec", "template", "spec", "containers", 0)
	if cmd := dig[[]any](c, "command"); cmd != nil {
		t.Errorf("container command %v: the image's entrypoint is `redrain serve`; give flags as args only", cmd)
	}
	vars := map[string]bool{}
	for _, e := range dig[[]any](c, "env") {
		vars[dig[string](e, "name")] = true
	}
	for _, from := range dig[[]any](c, "envFrom") {
		if cm := dig[string](from, "configMapRef", "name"); cm != "" {
			for k := range dig[map[string]any](object(t, docs, "ConfigMap", cm), "data") {
				vars[k] = true
			}
		}
	}
	var args []string
	for _, a := range dig[[]any](c, "args") {
		args = append(args, fmt.Sprint(a))
	}
	checkServeFlags(t, built(t), "StatefulSet args", args, vars)
}

// checkServeFlags fails the test for each of args that is not a flag of
// `redrain serve` (as its -h lists them), and, when vars is not nil, for
// each $(VAR) in them that vars lacks.
func checkServeFlags(t *testing.T, bin, what string, args []string, vars map[string]bool) {
	t.Helper()
	out, err := exec.Command(bin, "serve", "-h").Output()
	if err != nil {
		t.Fatalf("%s serve -h: %v", bin, err)
	}
	known := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^  -([a-z0-9-]+)`).FindAllStringSubmatch(string(out), -1) {
		known[m[1]] = true
	}
	if !known["config"] || !known["keys"] || !known["stop-grace"] {
		t.Fatalf("serve -h lists %d flags, not config, keys and stop-grace:\n%s", len(known), out)
	}
	if len(args) == 0 {
		t.Fatalf("%s: no args", what)
	}
	for _, a := range args {
		if !strings.HasPrefix(a, "-") {
			t.Errorf("%s: %q is not a flag (the entrypoint is `redrain serve` already)", what, a)
			continue
		}
		name, val, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !known[name] {
			t.Errorf("%s: %q: redrain serve has no flag -%s", what, a, name)
		}
		for _, m := range regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`).FindAllStringSubmatch(val, -1) {
			if vars != nil && !vars[m[1]] {
				t.Errorf("%s: %q uses $(%s), which the container does not define", what, a, m[1])
			}
		}
	}
}
