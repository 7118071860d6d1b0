#!/usr/bin/env bash
# Build the Debian root filesystem of lattice/base into the (empty) folder $1.
# Run by scripts/build-images as root; lives here so that editing it changes
# the base image's hash.
set -euo pipefail

target=$1
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=/dev/null
. "$here/rootfs.conf"

# Install the dpkg excludes before any package is unpacked, so docs never land
# in the first place (debootstrap unpacks the base set itself, so we also
# delete what it left below).
mkdir -p "$target/etc/dpkg/dpkg.cfg.d" "$target/etc/apt/apt.conf.d"
cp "$here/nodoc" "$target/etc/dpkg/dpkg.cfg.d/01-nodoc"

debootstrap --variant="$VARIANT" --include="$INCLUDE" \
    "$SUITE" "$target" "$MIRROR" >&2

cp "$here/apt.conf" "$target/etc/apt/apt.conf.d/01-lattice"
cp "$here/sources.list" "$target/etc/apt/sources.list"

# Take the point-release and security updates here rather than in a Dockerfile
# layer, where they would be stored twice.
cp /etc/resolv.conf "$target/etc/resolv.conf"
chroot "$target" env DEBIAN_FRONTEND=noninteractive apt-get -q update >&2
chroot "$target" env DEBIAN_FRONTEND=noninteractive \
    apt-get -q -y -o Dpkg::Options::=--force-confold upgrade >&2
chroot "$target" apt-get clean

# Trim what debootstrap unpacked before the excludes applied.
find "$target/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
find "$target/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$target"/usr/share/man/* "$target"/usr/share/info/* \
       "$target"/usr/share/lintian/* "$target"/usr/share/groff/*
find "$target/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias \
    -exec rm -rf {} +
rm -rf "$target"/var/lib/apt/lists/* "$target"/var/cache/apt/* \
       "$target"/var/cache/debconf/*-old "$target"/var/log/* "$target"/tmp/*
# A docker container gets these from the engine.
rm -f "$target/etc/hostname" "$target/etc/resolv.conf"
: > "$target/etc/machine-id"
