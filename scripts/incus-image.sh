#!/usr/bin/env bash
# Import Docker's machine image into Incus as a system-container image:
#   scripts/incus-image.sh DOCKER_IMAGE INCUS_ALIAS
# The rootfs is `docker export` of a container made from DOCKER_IMAGE (never started), plus
# what only a system container needs: a network configuration for eth0 (Incus's bridge
# gives addresses by DHCP; Docker sets them from outside) and templates that give each
# instance its hostname, as Incus's own images do. Skipped when INCUS_ALIAS already holds
# this Docker image (its id is kept in the image's properties).
set -euo pipefail
docker_image="$1" alias="$2"
log() { echo "incus-image: $*" >&2; }
want="$(docker image inspect --format '{{.Id}}' "$docker_image")"
have="$(incus image get-property "$alias" orch.docker-image 2>/dev/null || true)"
[ "$have" = "$want" ] && exit 0
log "importing $docker_image into Incus as $alias"
work="$(mktemp -d /tmp/orch-incus-image.XXXXXX)"
trap 'rm -rf "$work"; docker rm -f "$(basename "$work")" >/dev/null 2>&1 || true' EXIT
mkdir "$work/rootfs" "$work/templates"
docker create --name "$(basename "$work")" "$docker_image" >/dev/null
docker export "$(basename "$work")" | tar -C "$work/rootfs" -x
rm -f "$work/rootfs/.dockerenv"
mkdir -p "$work/rootfs/etc/systemd/network"
printf '[Match]\nName=eth0\n\n[Network]\nDHCP=ipv4\n' >"$work/rootfs/etc/systemd/network/10-eth0.network"
ln -sf /lib/systemd/system/systemd-networkd.service \
  "$work/rootfs/etc/systemd/system/multi-user.target.wants/systemd-networkd.service"
printf '{{ instance.name }}\n' >"$work/templates/hostname.tpl"
printf '127.0.0.1 localhost\n127.0.1.1 {{ instance.name }}\n' >"$work/templates/hosts.tpl"
cat >"$work/metadata.yaml" <<META
architecture: $(uname -m)
creation_date: $(date +%s)
properties:
  description: orch machine (Debian bookworm, systemd)
  os: debian
  release: bookworm
templates:
  /etc/hostname:
    when: [create, copy]
    template: hostname.tpl
  /etc/hosts:
    when: [create, copy]
    template: hosts.tpl
META
tar -C "$work" -czf "$work/meta.tar.gz" metadata.yaml templates
tar -C "$work/rootfs" -czf "$work/rootfs.tar.gz" .
incus image delete "$alias" >/dev/null 2>&1 || true
incus image import "$work/meta.tar.gz" "$work/rootfs.tar.gz" --alias "$alias" >/dev/null
incus image set-property "$alias" orch.docker-image "$want"
