// Package images builds the binaries of the container images with exactly
// the command lines their Dockerfiles use (there is no container engine on
// the build machines), and checks what the images promise: static
// binaries, a non-root user, an entrypoint that exists.
package images

import (
	"bufio"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	meshv1alpha1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/controllers"
	"github.com/weftmesh/weft/internal/images"
	"github.com/weftmesh/weft/internal/testenv"
)

type dockerfile struct {
	path       string
	args, env  map[string]string
	builds     []string // RUN lines that run go build
	finalBase  string
	user       string
	entrypoint string
	copies     []string // final-stage COPY destinations
}

func parse(t *testing.T, path string) dockerfile {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d := dockerfile{path: path, args: map[string]string{}, env: map[string]string{}}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		instr, rest, _ := strings.Cut(line, " ")
		switch strings.ToUpper(instr) {
		case "FROM":
			d.finalBase = strings.Fields(rest)[0]
			d.user, d.entrypoint, d.copies = "", "", nil
		case "ARG":
			k, v, _ := strings.Cut(rest, "=")
			d.args[k] = v
		case "ENV":
			k, v, _ := strings.Cut(rest, "=")
			d.env[k] = v
		case "RUN":
			if strings.Contains(rest, "go build") {
				d.builds = append(d.builds, rest)
			}
		case "USER":
			d.user = rest
		case "ENTRYPOINT":
			d.entrypoint = rest
		case "COPY":
			fs := strings.Fields(rest)
			d.copies = append(d.copies, fs[len(fs)-1])
		}
	}
	return d
}

var varRef = regexp.MustCompile(`\$\{?([A-Z_]+)\}?`)

// build runs each go build line of d from the repository root (the
// Dockerfiles' WORKDIR holds the repository), writing into dir instead of
// /out, and returns the binaries built.
func build(t *testing.T, d dockerfile, dir string) []string {
	t.Helper()
	var bins []string
	for _, line := range d.builds {
		cmdline := varRef.ReplaceAllStringFunc(line, func(m string) string {
			name := varRef.FindStringSubmatch(m)[1]
			if v, ok := d.args[name]; ok {
				return v
			}
			return d.env[name]
		})
		cmdline = strings.ReplaceAll(cmdline, "/out/", dir+"/")
		cmd := exec.Command("bash", "-c", cmdline)
		cmd.Dir = testenv.RepoRoot()
		cmd.Env = os.Environ()
		for k, v := range d.env {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %s: %v\n%s", d.path, cmdline, err, out)
		}
		m := regexp.MustCompile(`-o (\S+)`).FindStringSubmatch(cmdline)
		bins = append(bins, m[1])
	}
	return bins
}

func checkStatic(t *testing.T, bin string) {
	t.Helper()
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s is dynamically linked (has an ELF interpreter)", bin)
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("%s needs shared libraries %v", bin, libs)
	}
	if f.Section(".debug_info") != nil {
		t.Errorf("%s carries DWARF; the Dockerfile should strip it (-s -w)", bin)
	}
}

func TestImagesBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds every binary")
	}
	root := testenv.RepoRoot()
	for _, tc := range []struct {
		file, wantBase string
		wantBins       []string
	}{
		{"Dockerfile", "gcr.io/distroless/static-debian12:nonroot", []string{"manager", "weft-controlplane", "weftctl"}},
		{"proxy/Dockerfile", "debian:12-slim", []string{"weft-proxy"}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			d := parse(t, filepath.Join(root, tc.file))
			if d.finalBase != tc.wantBase {
				t.Errorf("final stage FROM %s, want %s", d.finalBase, tc.wantBase)
			}
			if d.env["CGO_ENABLED"] != "0" {
				t.Errorf("CGO_ENABLED=%q: the binaries must be static", d.env["CGO_ENABLED"])
			}
			if d.user == "" || strings.HasPrefix(d.user, "0") || strings.HasPrefix(d.user, "root") {
				t.Errorf("final stage USER %q: images must run as non-root", d.user)
			}
			checkVersionSymbols(t, d)
			dir := t.TempDir()
			bins := build(t, d, dir)
			var names []string
			for _, b := range bins {
				names = append(names, filepath.Base(b))
				checkStatic(t, b)
			}
			if strings.Join(names, ",") != strings.Join(tc.wantBins, ",") {
				t.Errorf("built %v, want %v", names, tc.wantBins)
			}
			entry := strings.Trim(d.entrypoint, `[]"`)
			if !strings.HasSuffix(entry, "/"+tc.wantBins[0]) {
				t.Errorf("ENTRYPOINT %s is not one of the built binaries", d.entrypoint)
			}
		})
	}
}

var xFlag = regexp.MustCompile(`-X (github\.com/weftmesh/weft/[^=\s]+)\.([A-Za-z_]+)=`)

// checkVersionSymbols: go build ignores -X for a variable that does not
// exist, so a renamed package would silently ship "dev" as its version.
func checkVersionSymbols(t *testing.T, d dockerfile) {
	t.Helper()
	for _, line := range d.builds {
		for _, m := range xFlag.FindAllStringSubmatch(line, -1) {
			dir := filepath.Join(testenv.RepoRoot(), strings.TrimPrefix(m[1], "github.com/weftmesh/weft/"))
			files, _ := filepath.Glob(filepath.Join(dir, "*.go"))
			found := false
			decl := regexp.MustCompile(`(?m)^var ` + m[2] + ` = "`)
			for _, f := range files {
				b, err := os.ReadFile(f)
				if err == nil && !strings.HasSuffix(f, "_test.go") && decl.Match(b) {
					found = true
				}
			}
			if !found {
				t.Errorf("%s: -X %s.%s names no string variable", d.path, m[1], m[2])
			}
		}
	}
}

// TestControlPlaneCommandIsInTheImage: the operator starts the control plane
// with an absolute command, because the distroless image has no shell and
// no PATH entry for /. It must be a binary the Dockerfile puts there.
func TestControlPlaneCommandIsInTheImage(t *testing.T) {
	d := parse(t, filepath.Join(testenv.RepoRoot(), "Dockerfile"))
	mesh := &meshv1alpha1.MeshControlPlane{Spec: meshv1alpha1.MeshControlPlaneSpec{Version: "v1.0.0"}}
	dep := controllers.RenderDeployment(mesh, images.Set{Version: "v1.0.0", Revision: "v1-0-0", ControlPlane: "x", Proxy: "y"})
	cmd := dep.Spec.Template.Spec.Containers[0].Command
	if len(cmd) == 0 || !filepath.IsAbs(cmd[0]) {
		t.Fatalf("control plane command %v is not an absolute path", cmd)
	}
	built := false
	for _, line := range d.builds {
		built = built || strings.Contains(line, "-o /out"+cmd[0]+" ")
	}
	if !built || !slices.Contains(d.copies, "/") {
		t.Errorf("the image does not put a binary at %s (builds %v, copies to %v)", cmd[0], d.builds, d.copies)
	}
}
