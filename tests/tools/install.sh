#!/usr/bin/env bash
# Installs the outside tools the tests drive: real clients, a real S3 server
# (versitygw) and the OCI conformance suite, built from the Go module proxy at
# pinned versions, and skopeo from Debian's packages. Idempotent: a tool
# already built at its pinned version is kept, so a second run costs only a
# few stat calls.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin="${TOOLS_BIN:-$root/.tools/bin}"
mkdir -p "$bin"

# Pinned versions: bump deliberately, one at a time.
CRANE_VERSION=v0.22.1
ORAS_VERSION=v1.3.6
REGCTL_VERSION=v0.11.7
DISTRIBUTION_VERSION=v3.1.2
# A real S3 server (posix backend) that verifies SigV4 presigned URLs, which
# moto does not: tests/real_s3.py starts it for the presigned-URL tests.
VERSITYGW_VERSION=v1.8.0
# The conformance module has no tags of its own; this is the newest fixed
# commit on the module proxy (after the v1.1.1 release).
CONFORMANCE_VERSION=v0.0.0-20260831232431-97274622c111

export GOFLAGS="${GOFLAGS:-} -mod=mod"
export CGO_ENABLED=0

stamp_ok() { [ -x "$bin/$1" ] && [ "$(cat "$bin/.$1.version" 2>/dev/null)" = "$2" ]; }
stamp() { echo "$2" > "$bin/.$1.version"; }

go_tool() {  # name module-path version
  local name=$1 pkg=$2 version=$3
  stamp_ok "$name" "$version" && return 0
  echo "building $name $version" >&2
  GOBIN="$bin" go install "$pkg@$version"
  stamp "$name" "$version"
}

go_tool crane github.com/google/go-containerregistry/cmd/crane "$CRANE_VERSION"
go_tool oras oras.land/oras/cmd/oras "$ORAS_VERSION"
go_tool regctl github.com/regclient/regclient/cmd/regctl "$REGCTL_VERSION"
# The CNCF reference registry, to compare against (verify, benchmarks).
go_tool registry github.com/distribution/distribution/v3/cmd/registry "$DISTRIBUTION_VERSION"
go_tool versitygw github.com/versity/versitygw/cmd/versitygw "$VERSITYGW_VERSION"

if ! stamp_ok conformance.test "$CONFORMANCE_VERSION"; then
  echo "building conformance.test $CONFORMANCE_VERSION" >&2
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  (
    cd "$work"
    go mod init cargohold.invalid/conformance >/dev/null 2>&1
    go get "github.com/opencontainers/distribution-spec/conformance@$CONFORMANCE_VERSION" >/dev/null 2>&1
    go test -c -o "$bin/conformance.test" github.com/opencontainers/distribution-spec/conformance
  )
  stamp conformance.test "$CONFORMANCE_VERSION"
fi

if ! command -v skopeo >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing skopeo from Debian's packages" >&2
    apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq skopeo >/dev/null
  else
    echo "skopeo is missing: install it with your package manager (apt-get install skopeo)" >&2
  fi
fi
echo "tools ready in $bin" >&2
