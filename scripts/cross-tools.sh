# Sourced by scripts/check-nostd.sh and scripts/firmware.sh (which define `step` and `die`): installs the Debian
# packages the bare-metal builds and QEMU runs need when they are missing, and defines `xcargo`, Debian's cargo with
# `-Zbuild-std` allowed, for the cross builds (rustup's toolchain has no thumb targets here).
PKGS=(rustc-web cargo-web rust-web-src qemu-system-arm binutils-arm-none-eabi gcc-arm-none-eabi qemu-user gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    step "installing ${missing[*]}"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y "${PKGS[@]}"
fi
[ -x /usr/bin/cargo ] && [ -d /usr/lib/rustlib/src/rust/library/core ] || die "Debian cargo / rust-web-src not found"

# The caller's RUSTFLAGS / target dir must not leak into the cross builds.
unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS CARGO_TARGET_DIR CARGO_BUILD_TARGET
xcargo() { PATH="/usr/bin:$PATH" RUSTC_BOOTSTRAP=1 /usr/bin/cargo "$@"; }
# Host builds (host-gen, quantize-tool): whatever `cargo` is first on PATH (rustup's if present, else Debian's).
HOST_CARGO="${HOST_CARGO:-cargo}"
