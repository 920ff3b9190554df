#!/usr/bin/env bash
# Builds bin/limpet.deb (a link to bin/limpet_VERSION_ARCH.deb) with nfpm,
# from bin/limpet: 'make deb'.
set -euo pipefail
cd "$(dirname "$0")/../.."
GO=${GO:-go}
NFPM=${NFPM:-github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2}
[ -x bin/limpet ] || { echo "deb: bin/limpet is missing: run 'make build'" >&2; exit 1; }

# The man page and completions come from the CLI itself.
rm -rf bin/pkg
mkdir -p bin/pkg
bin/limpet man | gzip -9n >bin/pkg/limpet.8.gz
bin/limpet completion bash >bin/pkg/limpet.bash
bin/limpet completion zsh >bin/pkg/_limpet

# Debian versions sort: a tag if there is one, else 0~git<commits>.<hash>.
if tag=$(git describe --tags --abbrev=0 2>/dev/null); then
	version=${tag#v}
	extra=$(git rev-list --count "$tag"..HEAD)
	[ "$extra" = 0 ] || version="$version+git$extra.$(git rev-parse --short HEAD)"
else
	version="0~git$(git rev-list --count HEAD).$(git rev-parse --short HEAD)"
fi
git diff --quiet HEAD 2>/dev/null || version="$version.dirty"
arch=$("$GO" env GOARCH)
deb="limpet_${version}_${arch}.deb"
rm -f bin/limpet_*.deb bin/limpet.deb
LIMPET_DEB_VERSION=$version LIMPET_DEB_ARCH=$arch SOURCE_DATE_EPOCH=$(git log -1 --format=%ct) \
	"$GO" run "$NFPM" package --config scripts/deb/nfpm.yaml --packager deb --target "bin/$deb" >/dev/null
ln -s "$deb" bin/limpet.deb
echo "bin/$deb"
