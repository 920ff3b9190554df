package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/limpet-lb/limpet/test/testutil"
)

// limpetBinary is $LIMPET_BIN (make test), or a build of this package.
func limpetBinary(t *testing.T) string {
	t.Helper()
	if b := os.Getenv("LIMPET_BIN"); b != "" {
		return b
	}
	bin := filepath.Join(t.TempDir(), "limpet")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// shellEnv puts the binary first on PATH, as the package installs it.
func shellEnv(bin string) []string {
	return append(os.Environ(), "PATH="+filepath.Dir(bin)+":"+os.Getenv("PATH"))
}

// complete returns the words bash offers for line (the cursor at its end),
// with the script 'limpet completion bash' prints; withBashCompletion loads
// the bash-completion package first, as a login shell on Debian does.
func bashComplete(t *testing.T, bash, bin, line string, withBashCompletion bool) []string {
	t.Helper()
	script := `source <(limpet completion bash)
read -ra COMP_WORDS <<<"$LINE"
[[ "$LINE" == *" " ]] && COMP_WORDS+=("")
COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
COMP_LINE=$LINE
COMP_POINT=${#LINE}
_limpet
printf '%s\n' "${COMPREPLY[@]}"`
	if withBashCompletion {
		script = "source /usr/share/bash-completion/bash_completion\n" + script
	}
	cmd := exec.Command(bash, "--norc", "--noprofile", "-c", script)
	cmd.Env = append(shellEnv(bin), "LINE="+line)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("bash completion of %q: %v\n%s", line, err, out)
	}
	return strings.Fields(string(out))
}

func TestBashCompletion(t *testing.T) {
	bash := testutil.NeedTool(t, "bash", "bash")
	bin := limpetBinary(t)
	modes := []bool{false}
	if _, err := os.Stat("/usr/share/bash-completion/bash_completion"); err == nil {
		modes = append(modes, true)
	} else if os.Getenv("CI") == "true" {
		t.Fatal("the bash-completion package is not installed")
	}
	for _, withPkg := range modes {
		for _, tc := range []struct {
			line string
			want []string
		}{
			{"limpet pers", []string{"persistence", "persist"}},
			{"limpet persistence d", []string{"delete", "dump"}},
			{"limpet run --conf", []string{"--config"}},
			{"limpet completion ", nil}, // no subcommands: files
			{"limpet status -", []string{"--output", "-o", "--socket", "--help", "-h"}},
		} {
			got := bashComplete(t, bash, bin, tc.line, withPkg)
			if tc.want == nil {
				continue
			}
			if !sameWords(got, tc.want) {
				t.Errorf("bash-completion package loaded %v: %q completes to %q, want %q", withPkg, tc.line, got, tc.want)
			}
		}
	}
}

func TestZshCompletion(t *testing.T) {
	zsh := testutil.NeedTool(t, "zsh", "zsh")
	bin := limpetBinary(t)
	dir := t.TempDir()
	out, err := exec.Command(bin, "completion", "zsh").Output()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(out), "#compdef limpet\n") {
		t.Fatalf("the zsh script does not start with #compdef limpet:\n%s", out)
	}
	if err := os.WriteFile(filepath.Join(dir, "_limpet"), out, 0o644); err != nil {
		t.Fatal(err)
	}
	// The completion function as zsh autoloads it from $fpath, with
	// _describe and _files (compsys) standing in to print what they get.
	complete := func(words ...string) []string {
		t.Helper()
		script := `fpath=("$DIR" $fpath)
autoload -Uz _limpet
_describe() { print -rl -- "${(@P)2}" }
_files() { print -- "<files>" }
words=("${(@s: :)LINE}")
[[ "$LINE" == *" " ]] && words+=("")
CURRENT=${#words}
_limpet`
		cmd := exec.Command(zsh, "-f", "-c", script)
		cmd.Env = append(shellEnv(bin), "DIR="+dir, "LINE="+strings.Join(words, " "))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("zsh completion of %q: %v\n%s", words, err, out)
		}
		return strings.Split(strings.TrimSpace(string(out)), "\n")
	}
	got := complete("limpet", "pers")
	found := false
	for _, l := range got {
		found = found || strings.HasPrefix(l, "persistence:")
	}
	if !found {
		t.Fatalf("zsh offers %q for 'limpet pers', want persistence with its description", got)
	}
	got = complete("limpet", "run", "--c")
	if !contains(got, "--config") {
		t.Fatalf("zsh offers %q for 'limpet run --c', want --config", got)
	}
}

func sameWords(got, want []string) bool {
	if len(got) != len(want) {
		return false
	}
	for _, w := range want {
		if !contains(got, w) {
			return false
		}
	}
	return true
}

func contains(list []string, s string) bool {
	for _, l := range list {
		if l == s {
			return true
		}
	}
	return false
}
