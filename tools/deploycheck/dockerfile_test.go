package deploycheck

import (
	"bytes"
	"go/version"
	"path"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"

	"github.com/open-autoglm/autoglm/app/config"
)

const (
	// mainPackage is what the image must build.
	mainPackage = "./app/cmd/autoglm"
	// runtimeImage is the base of the final stage.
	runtimeImage = "gcr.io/distroless/static-debian12:nonroot"
	// versionSentinel stands in for the VERSION build argument when the
	// build command is expanded, to see where the value lands.
	versionSentinel = "VERSION-SENTINEL-1.2.3"
)

// dockerfile is the parsed Dockerfile with the parts the checks need.
type dockerfile struct {
	stages  []instructions.Stage
	lex     *shell.Lex
	builder int                       // index of the stage the final stage copies from
	copy    *instructions.CopyCommand // that COPY --from
}

func (df dockerfile) final() instructions.Stage { return df.stages[len(df.stages)-1] }

func mustDockerfile(tb testing.TB) dockerfile {
	tb.Helper()
	res, err := parser.Parse(bytes.NewReader(mustReadFile(tb, "Dockerfile")))
	if err != nil {
		tb.Fatal(err)
	}
	for _, w := range res.Warnings {
		tb.Errorf("Dockerfile: %s", w.Short)
	}
	stages, _, err := instructions.Parse(res.AST, nil)
	if err != nil {
		tb.Fatal(err)
	}
	if len(stages) < 2 {
		tb.Fatalf("%d stages, want a multi-stage build (builder + runtime)", len(stages))
	}
	df := dockerfile{stages: stages, lex: shell.NewLex(res.EscapeToken), builder: -1}
	for _, cmd := range df.final().Commands {
		if c, ok := cmd.(*instructions.CopyCommand); ok && c.From != "" {
			if df.copy != nil {
				tb.Fatal("the final stage copies from other stages more than once; want just the binary")
			}
			df.copy = c
		}
	}
	if df.copy == nil {
		tb.Fatal("the final stage has no COPY --from=<builder>")
	}
	for i, s := range stages[:len(stages)-1] {
		if strings.EqualFold(s.Name, df.copy.From) || strconv.Itoa(i) == df.copy.From {
			df.builder = i
		}
	}
	if df.builder < 0 {
		tb.Fatalf("COPY --from=%s names no earlier stage", df.copy.From)
	}
	return df
}

// goBuild is the expanded `go build` command of the builder stage.
type goBuild struct {
	run     *instructions.RunCommand
	index   int               // position in the stage's commands
	env     map[string]string // inline assignments before "go"
	flags   map[string]string // -flag value or -flag=value; "" for booleans
	output  string
	targets []string
}

// mustGoBuild finds and parses the RUN that builds the binary.
func mustGoBuild(tb testing.TB, df dockerfile) goBuild {
	tb.Helper()
	env := shell.EnvsFromSlice([]string{"VERSION=" + versionSentinel, "TARGETOS=linux", "TARGETARCH=amd64"})
	var found []goBuild
	for i, cmd := range df.stages[df.builder].Commands {
		run, ok := cmd.(*instructions.RunCommand)
		if !ok || !run.PrependShell {
			continue
		}
		words, err := df.lex.ProcessWords(strings.Join(run.CmdLine, " "), env)
		if err != nil {
			tb.Fatalf("RUN %s: %v", run.CmdLine, err)
		}
		// One shell command at a time: split at the control operators.
		for _, command := range splitShell(words) {
			g := goBuild{run: run, index: i, env: map[string]string{}, flags: map[string]string{}}
			j := 0
			for ; j < len(command) && strings.Contains(command[j], "=") && !strings.HasPrefix(command[j], "-"); j++ {
				k, v, _ := strings.Cut(command[j], "=")
				g.env[k] = v
			}
			if len(command) < j+2 || command[j] != "go" || command[j+1] != "build" {
				continue
			}
			args := command[j+2:]
			for k := 0; k < len(args); k++ {
				a := args[k]
				if !strings.HasPrefix(a, "-") {
					g.targets = append(g.targets, a)
					continue
				}
				name, val, hasVal := strings.Cut(strings.TrimPrefix(a, "-"), "=")
				name = strings.TrimPrefix(name, "-")
				if !hasVal && takesValue(name) && k+1 < len(args) {
					k++
					val = args[k]
				}
				g.flags[name] = val
			}
			g.output = g.flags["o"]
			found = append(found, g)
		}
	}
	if len(found) != 1 {
		tb.Fatalf("builder stage has %d `go build` commands, want 1", len(found))
	}
	return found[0]
}

func splitShell(words []string) [][]string {
	var out [][]string
	var cur []string
	for _, w := range words {
		if w == "&&" || w == "||" || w == ";" || w == "|" {
			out = append(out, cur)
			cur = nil
			continue
		}
		cur = append(cur, w)
	}
	return append(out, cur)
}

// takesValue reports whether a go build flag consumes the next word.
func takesValue(flag string) bool {
	switch flag {
	case "o", "ldflags", "gcflags", "asmflags", "tags", "mod", "modfile", "p", "pkgdir", "buildmode",
		"compiler", "gccgoflags", "installsuffix", "overlay", "pgo", "C", "covermode", "coverpkg":
		return true
	}
	return false
}

// stageEnv returns the ENV values set in a stage before command index end.
func stageEnv(s instructions.Stage, end int) map[string]string {
	env := map[string]string{}
	for _, cmd := range s.Commands[:end] {
		if e, ok := cmd.(*instructions.EnvCommand); ok {
			for _, kv := range e.Env {
				env[kv.Key] = kv.Value
			}
		}
	}
	return env
}

// allInterfaces reports whether host binds every interface.
func allInterfaces(host string) bool { return host == "0.0.0.0" || host == "::" }

// TestDockerfileListensOnEveryInterface: the app binds loopback unless
// AUTOGLM_HOST says otherwise; the image must answer on the pod's address.
func TestDockerfileListensOnEveryInterface(t *testing.T) {
	final := mustDockerfile(t).final()
	if host := stageEnv(final, len(final.Commands))["AUTOGLM_HOST"]; !allInterfaces(host) {
		t.Errorf("final stage ENV AUTOGLM_HOST=%q, want 0.0.0.0 or :: (the app's default is loopback only)", host)
	}
}

// dockerfileUID returns the numeric uid of the final stage's USER.
func dockerfileUID(tb testing.TB) int64 {
	tb.Helper()
	df := mustDockerfile(tb)
	var user string
	for _, cmd := range df.final().Commands {
		if u, ok := cmd.(*instructions.UserCommand); ok {
			user = u.User
		}
	}
	if user == "" {
		tb.Fatal("the final stage has no USER: the image would run as root")
	}
	uidPart, _, _ := strings.Cut(user, ":")
	uid, err := strconv.ParseInt(uidPart, 10, 64)
	if err != nil {
		tb.Fatalf("USER %q: want a numeric uid, so Kubernetes can verify runAsNonRoot", user)
	}
	return uid
}

func TestDockerfileBaseImages(t *testing.T) {
	df := mustDockerfile(t)
	t.Run("Runtime", func(t *testing.T) {
		if got := df.final().BaseName; got != runtimeImage {
			t.Errorf("final stage FROM %s, want %s", got, runtimeImage)
		}
	})
	t.Run("Builder", func(t *testing.T) {
		base := df.stages[df.builder].BaseName
		tag, ok := strings.CutPrefix(base, "golang:")
		if !ok {
			t.Fatalf("builder FROM %s, want a golang image", base)
		}
		goVer := "go" + strings.SplitN(tag, "-", 2)[0]
		if !version.IsValid(goVer) {
			t.Fatalf("builder image tag %q: want a Go version such as 1.26 or 1.26.8", tag)
		}
		// The image must build with the Go the project develops with, and
		// at least the version go.mod asks for.
		if got, want := version.Lang(goVer), version.Lang(runtime.Version()); got != want {
			t.Errorf("builder Go %s, the toolchain here is %s: want the same language version", got, want)
		}
		if want := rootGoDirective(t); version.Compare(goVer, want) < 0 && version.Lang(goVer) != version.Lang(want) {
			t.Errorf("builder Go %s is older than go.mod's %s", goVer, want)
		}
	})
}

// rootGoDirective returns the go line of the product's go.mod as "go1.N".
func rootGoDirective(tb testing.TB) string {
	tb.Helper()
	for _, line := range strings.Split(string(mustReadFile(tb, "go.mod")), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "go" {
			return "go" + f[1]
		}
	}
	tb.Fatal("go.mod has no go directive")
	return ""
}

func TestDockerfileBuildCommand(t *testing.T) {
	df := mustDockerfile(t)
	g := mustGoBuild(t, df)
	builder := df.stages[df.builder]

	cgo, ok := g.env["CGO_ENABLED"]
	if !ok {
		cgo, ok = stageEnv(builder, g.index)["CGO_ENABLED"]
	}
	if !ok || cgo != "0" {
		t.Errorf("CGO_ENABLED=%q, want 0 (ENV in the builder stage or inline): distroless/static has no libc", cgo)
	}
	if _, ok := g.flags["trimpath"]; !ok {
		t.Error("go build without -trimpath")
	}
	if !slices.Equal(g.targets, []string{mainPackage}) {
		t.Errorf("go build %v, want %s", g.targets, mainPackage)
	}
	ld := strings.Fields(g.flags["ldflags"])
	i := slices.Index(ld, "-X")
	if i < 0 || i+1 >= len(ld) || ld[i+1] != "main.version="+versionSentinel {
		t.Errorf("-ldflags %q: want -X main.version=${VERSION}", g.flags["ldflags"])
	}
	var argVersion bool
	for _, cmd := range builder.Commands[:g.index] {
		if a, ok := cmd.(*instructions.ArgCommand); ok {
			for _, kv := range a.Args {
				argVersion = argVersion || kv.Key == "VERSION"
			}
		}
	}
	if !argVersion {
		t.Error("no ARG VERSION in the builder stage before go build: the ldflag would get an empty version")
	}
	if g.output == "" {
		t.Error("go build without -o")
	}
}

// TestDockerfileModuleLayer checks the modules are downloaded in a layer of
// their own, before the source is copied, so code edits reuse it.
func TestDockerfileModuleLayer(t *testing.T) {
	df := mustDockerfile(t)
	g := mustGoBuild(t, df)
	builder := df.stages[df.builder]
	copyGoMod, download, copySource := -1, -1, -1
	for i, cmd := range builder.Commands {
		switch c := cmd.(type) {
		case *instructions.CopyCommand:
			if c.From != "" {
				continue
			}
			for _, src := range c.SourcePaths {
				switch {
				case src == "go.mod" && copyGoMod < 0:
					copyGoMod = i
				case src != "go.mod" && !strings.HasPrefix(src, "go.sum") && copySource < 0:
					copySource = i
				}
			}
		case *instructions.RunCommand:
			if strings.Contains(strings.Join(c.CmdLine, " "), "go mod download") && download < 0 {
				download = i
			}
		}
	}
	if copyGoMod < 0 || download < 0 || copySource < 0 {
		t.Fatalf("COPY go.mod at %d, RUN go mod download at %d, COPY of the source at %d: want all three", copyGoMod, download, copySource)
	}
	if copyGoMod >= download || download >= copySource || copySource >= g.index {
		t.Errorf("order COPY go.mod (%d) < go mod download (%d) < COPY source (%d) < go build (%d) broken", copyGoMod, download, copySource, g.index)
	}
}

func TestDockerfileFinalStage(t *testing.T) {
	df := mustDockerfile(t)
	g := mustGoBuild(t, df)
	final := df.final()

	// The binary copied is the one built.
	built := g.output
	if !path.IsAbs(built) {
		wd := "/"
		for _, cmd := range df.stages[df.builder].Commands[:g.index] {
			if w, ok := cmd.(*instructions.WorkdirCommand); ok {
				wd = path.Join(wd, w.Path)
			}
		}
		built = path.Join(wd, built)
	}
	if !slices.Equal(df.copy.SourcePaths, []string{built}) {
		t.Errorf("COPY --from=%s %v, but go build writes %s", df.copy.From, df.copy.SourcePaths, built)
	}
	installed := df.copy.DestPath
	if strings.HasSuffix(installed, "/") {
		installed += path.Base(built)
	}

	var entrypoint *instructions.EntrypointCommand
	var exposed []string
	for _, cmd := range final.Commands {
		switch c := cmd.(type) {
		case *instructions.EntrypointCommand:
			entrypoint = c
		case *instructions.ExposeCommand:
			exposed = append(exposed, c.Ports...)
		case *instructions.RunCommand:
			t.Errorf("RUN %v in the final stage: distroless has no shell", c.CmdLine)
		}
	}
	if entrypoint == nil {
		t.Error("no ENTRYPOINT")
	} else {
		if entrypoint.PrependShell {
			t.Error("ENTRYPOINT in shell form: distroless has no shell, use the JSON form")
		}
		if len(entrypoint.CmdLine) == 0 || entrypoint.CmdLine[0] != installed {
			t.Errorf("ENTRYPOINT %v, want the copied binary %s", entrypoint.CmdLine, installed)
		}
	}
	port := strconv.Itoa(config.DefaultPort)
	if !slices.ContainsFunc(exposed, func(p string) bool { return p == port || p == port+"/tcp" }) {
		t.Errorf("EXPOSE %v, want %s (config.DefaultPort)", exposed, port)
	}
	if uid := dockerfileUID(t); uid == 0 {
		t.Error("USER is root")
	}
}

func TestDockerignore(t *testing.T) {
	patterns, err := ignorefile.ReadAll(bytes.NewReader(mustReadFile(t, ".dockerignore")))
	if err != nil {
		t.Fatal(err)
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		path     string
		excluded bool
	}{
		{".git/HEAD", true},
		{"bin/daprd", true},
		{"data/autoglm.db", true},
		{"node_modules/ws/index.js", true},
		{"app/web/node_modules/ws/index.js", true},
		{"go.mod", false},
		{"go.sum", false},
		{"app/cmd/autoglm/main.go", false},
		{"app/config/config.go", false},
		{"app/web/static/client.js", false},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			got, err := pm.MatchesOrParentMatches(tt.path)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.excluded {
				t.Errorf("excluded = %v, want %v", got, tt.excluded)
			}
		})
	}
}
