#!/usr/bin/env bash
# Kubernetes for the `kubernetes` driver, from Debian's source package (no internet needed
# beyond Debian's mirrors). Idempotent: when the cache is complete it only checks (<1 s).
#
# Leaves in $JEROBOAM_K8S_CACHE (default /var/cache/jeroboam/kubernetes/v1.20.2):
#   bin/  kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl
#   pause/pause      static pause binary, imported by the driver as a local image
# and installs etcd-server, containernetworking-plugins (and the build's golang-go, gcc).
# The system's apt sources are never changed: source entries live in a private apt directory.
set -euo pipefail

DEB_VERSION=1.20.5+really1.20.2-1.1+deb12u1
CACHE=${JEROBOAM_K8S_CACHE:-/var/cache/jeroboam/kubernetes/v1.20.2}
BINS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)
# What each binary was built with; a cached one built otherwise is built again.
declare -A RECIPE=([kubelet]=oom-score-adj-0)
say() { echo "build-kubernetes: $*"; }

built() { [[ -x $CACHE/bin/$1 && $(cat "$CACHE/bin/.$1.recipe" 2>/dev/null) == "${RECIPE[$1]:-plain}" ]]; }
complete() {
  local b
  for b in "${BINS[@]}"; do built "$b" || return 1; done
  [[ -x $CACHE/bin/kubectl ]] || return 1
  [[ -x $CACHE/pause/pause ]] && command -v etcd >/dev/null && [[ -x /usr/lib/cni/bridge ]]
}
if complete; then
  say "cached in $CACHE ($("$CACHE/bin/kube-apiserver" --version))"
  exit 0
fi

[[ $(id -u) -eq 0 ]] || { say "must run as root" >&2; exit 1; }
mkdir -p "$CACHE"
# One build at a time per machine (test runs of several worktrees may start together).
exec 9>"$CACHE/.lock"
flock 9
complete && { say "cached in $CACHE (built by a concurrent run)"; exit 0; }

export DEBIAN_FRONTEND=noninteractive
cleanup=()
trap 'rm -rf "${cleanup[@]}"' EXIT
APT_WAIT=(-o DPkg::Lock::Timeout=600)
need=()
command -v etcd >/dev/null || need+=(etcd-server)
[[ -x /usr/lib/cni/bridge ]] || need+=(containernetworking-plugins)
command -v go >/dev/null || need+=(golang-go)
command -v gcc >/dev/null || need+=(gcc libc6-dev)
if ((${#need[@]})); then
  say "installing ${need[*]}"
  # The package's own etcd service must not start on the host.
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d
    cleanup+=(/usr/sbin/policy-rc.d)
  fi
  apt-get "${APT_WAIT[@]}" install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1 || {
    apt-get "${APT_WAIT[@]}" update -qq
    apt-get "${APT_WAIT[@]}" install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  }
fi

W=$CACHE/build
rm -rf "$W"
mkdir -p "$W/apt/parts" "$W/apt/lists/partial" "$W/apt/cache/archives/partial"
cleanup+=("$W")
# Source entries for the mirrors the system already uses; this source package exists in
# bookworm only, so newer suites are pointed back at bookworm.
sed -e 's/^Types: deb$/Types: deb-src/' \
    -e '/^Suites:/s/\b\(trixie\|forky\|sid\)\b/bookworm/g' \
    /etc/apt/sources.list.d/debian.sources >"$W/apt/parts/src.sources"
O=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$W/apt/parts"
   -o "Dir::State::Lists=$W/apt/lists" -o "Dir::Cache=$W/apt/cache" -o APT::Sandbox::User=root)
say "fetching source package kubernetes $DEB_VERSION (private apt lists in $W/apt)"
apt-get "${O[@]}" update -qq
cd "$W"
apt-get "${O[@]}" source -qq --download-only "kubernetes=$DEB_VERSION" >/dev/null
# apt checked the download against the signed Release file; dpkg-source has no keyring for
# the .dsc's own signature and would only warn
dpkg-source -x "kubernetes_${DEB_VERSION#*:}.dsc" k8s >/dev/null 2>&1
# kubectl matching the server (the package conflicts with other kubectl packages, so unpack it).
sed -i 's/^Types: deb-src$/Types: deb/' "$W/apt/parts/src.sources"
apt-get "${O[@]}" update -qq
apt-get "${O[@]}" download -qq "kubernetes-client=$DEB_VERSION" golang-github-modern-go-reflect2-dev >/dev/null
dpkg -x kubernetes-client_*.deb kc
dpkg -x golang-github-modern-go-reflect2-dev_*.deb r2

# The vendored reflect2 v1.0.1 crashes kube-apiserver under Go >= 1.18 ("fatal error: fault" in
# UnsafeMapType.UnsafeIterate); Debian's reflect2 1.0.2 replaces it.
V=k8s/vendor/github.com/modern-go/reflect2
rm -f "$V"/*.go
cp r2/usr/share/gocode/src/github.com/modern-go/reflect2/*.go "$V/"
rm -f "$V"/*_test.go

# Nodes share the host's kernel, and hosts without CAP_SYS_RESOURCE (containers, some VMs)
# refuse a negative oom_score_adj: kubelet asks -998 for every pod sandbox (dockershim) and
# -997 for Guaranteed and critical pods, so no pod could start there. Those become 0.
S=k8s/pkg/kubelet/dockershim/docker_sandbox.go Q=k8s/pkg/kubelet/qos/policy.go
sed -i 's/^\(\s*defaultSandboxOOMAdj\s\+int\s*=\s*\)-998$/\10/' "$S"
sed -i 's/^\(\s*\)return guaranteedOOMScoreAdj$/\1return 0/' "$Q"
grep -q 'defaultSandboxOOMAdj *int = 0$' "$S" && ! grep -q 'return guaranteedOOMScoreAdj$' "$Q" \
  || { say "the oom_score_adj patch no longer applies to $S and $Q" >&2; exit 1; }

missing=()
for b in "${BINS[@]}"; do built "$b" || missing+=("$b"); done
if ((${#missing[@]})); then
  say "building ${missing[*]} with $(go version | cut -d' ' -f3) (several minutes)"
  start=$SECONDS
  what=$(printf 'cmd/%s ' "${missing[@]}")
  (cd k8s && CGO_ENABLED=0 GOPROXY=off GOFLAGS=-mod=vendor GOCACHE="$W/gocache" \
     make WHAT="$what" >"$W/make.log" 2>&1) || { tail -40 "$W/make.log" >&2; exit 1; }
  say "built in $((SECONDS - start)) s"
fi

say "building the static pause binary"
mkdir -p pause
gcc -Os -static -Wall -o pause/pause k8s/build/pause/linux/pause.c
strip pause/pause

mkdir -p "$CACHE/bin"
# each binary lands whole (copied, then renamed): an interrupted run leaves no half file
for b in "${missing[@]}"; do
  cp "k8s/_output/local/bin/linux/$(go env GOARCH)/$b" "$CACHE/bin/.$b.tmp"
  mv "$CACHE/bin/.$b.tmp" "$CACHE/bin/$b"
  echo "${RECIPE[$b]:-plain}" >"$CACHE/bin/.$b.recipe"
done
cp kc/usr/bin/kubectl "$CACHE/bin/.kubectl.tmp" && mv "$CACHE/bin/.kubectl.tmp" "$CACHE/bin/kubectl"
rm -rf "$CACHE/pause" && mv pause "$CACHE/pause"
cd /
say "cached in $CACHE ($("$CACHE/bin/kube-apiserver" --version)); dropping the build tree"
