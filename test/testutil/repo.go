package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
)

// RepoRoot is the repository's top directory (this package lives in
// test/testutil).
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// LimpetBinary is the limpet binary tests run: $LIMPET_BIN when set (it
// must exist), otherwise ./cmd/limpet built into dir.
func LimpetBinary(dir string) (string, error) {
	if b := os.Getenv("LIMPET_BIN"); b != "" {
		if _, err := os.Stat(b); err != nil {
			return "", fmt.Errorf("LIMPET_BIN: %w", err)
		}
		return b, nil
	}
	bin := filepath.Join(dir, "limpet")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/limpet")
	cmd.Dir = RepoRoot()
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/limpet: %v\n%s", err, out)
	}
	return bin, nil
}
