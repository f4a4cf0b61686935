#!/usr/bin/env bash
# Import Docker's machine image into Incus as a system-container image:
#   scripts/incus-image.sh DOCKER_IMAGE INCUS_ALIAS
# The rootfs is `docker export` of a container made from DOCKER_IMAGE (never started), plus
# what only a system container needs, as files (no package is added: the image stays the
# Docker one's size):
#   - eth0 by DHCP with systemd-networkd (Incus's bridge gives addresses by DHCP; Docker sets
#     them from outside). networkd waits for udev to initialize a link whenever /sys is
#     writable, and an Incus container's /sys is writable but runs no udev (the image has
#     none), so eth0 stayed "pending" with no address. networkd sees /sys read-only through
#     ReadOnlyPaths=/sys (a drop-in): it then takes links as they are, as in any container
#     whose /sys is read-only (systemd's container interface);
#   - /etc/resolv.conf from the DHCP lease (no resolver daemon in the image: networkd only
#     records the DNS server the lease names): orch-dhcp-dns.service waits for the lease
#     (20 s at most) and writes it; boot is finished only then, so a machine that
#     `systemctl is-system-running` calls running has its address and DNS (no lease: that
#     unit fails and the machine is "degraded", naming it);
#   - templates that give each instance its hostname (user.orch.hostname where orch set it,
#     else the instance's name) on create and copy, as Incus's own images do.
# Skipped when INCUS_ALIAS already holds this Docker image made by this script (the image's
# properties keep the Docker image's id and this script's hash).
set -euo pipefail
docker_image="$1" alias="$2"
log() { echo "incus-image: $*" >&2; }
want="$(docker image inspect --format '{{.Id}}' "$docker_image")"
recipe="$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-16)"
have="$(incus image get-property "$alias" orch.docker-image 2>/dev/null || true)"
have_recipe="$(incus image get-property "$alias" orch.recipe 2>/dev/null || true)"
[ "$have" = "$want" ] && [ "$have_recipe" = "$recipe" ] && exit 0
log "importing $docker_image into Incus as $alias"
work="$(mktemp -d /tmp/orch-incus-image.XXXXXX)"
trap 'rm -rf "$work"; docker rm -f "$(basename "$work")" >/dev/null 2>&1 || true' EXIT
mkdir "$work/rootfs" "$work/templates"
docker create --name "$(basename "$work")" "$docker_image" >/dev/null
docker export "$(basename "$work")" | tar -C "$work/rootfs" -x
root="$work/rootfs"
rm -f "$root/.dockerenv"
: >"$root/etc/resolv.conf" && chmod 644 "$root/etc/resolv.conf"

mkdir -p "$root/etc/systemd/network" "$root/etc/systemd/system/systemd-networkd.service.d" \
  "$root/etc/systemd/system/multi-user.target.wants" "$root/usr/local/lib/orch"
printf '[Match]\nName=eth0\n\n[Network]\nDHCP=ipv4\n' >"$root/etc/systemd/network/10-eth0.network"
cat >"$root/etc/systemd/system/systemd-networkd.service.d/orch-no-udev.conf" <<'UNIT'
# No udev in this container: networkd would wait for it to initialize eth0 forever. With
# /sys read-only (to networkd only) it configures links without udev.
[Service]
ReadOnlyPaths=/sys
UNIT
ln -sf /lib/systemd/system/systemd-networkd.service \
  "$root/etc/systemd/system/multi-user.target.wants/systemd-networkd.service"
cat >"$root/usr/local/lib/orch/dhcp-dns" <<'SH'
#!/bin/sh
# /etc/resolv.conf from systemd-networkd's DHCP lease (the image has no resolver daemon).
i=0
while ! ls /run/systemd/netif/leases/* >/dev/null 2>&1; do
  i=$((i + 1))
  [ "$i" -le 400 ] || { echo "no DHCP lease on eth0 after 20 s" >&2; exit 1; }
  sleep 0.05
done
dns="$(sed -n 's/^DNS=//p' /run/systemd/netif/leases/*)"
domain="$(sed -n 's/^DOMAINNAME=//p' /run/systemd/netif/leases/* | head -n 1)"
{
  [ -z "$domain" ] || echo "search $domain"
  for server in $dns; do echo "nameserver $server"; done
} >/etc/resolv.conf.orch
mv /etc/resolv.conf.orch /etc/resolv.conf
SH
chmod 755 "$root/usr/local/lib/orch/dhcp-dns"
cat >"$root/etc/systemd/system/orch-dhcp-dns.service" <<'UNIT'
[Unit]
Description=DNS servers of the DHCP lease into /etc/resolv.conf (orch)
ConditionPathExists=/sys/class/net/eth0
After=systemd-networkd.service
Wants=systemd-networkd.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/lib/orch/dhcp-dns

[Install]
WantedBy=multi-user.target
UNIT
ln -sf /etc/systemd/system/orch-dhcp-dns.service "$root/etc/systemd/system/multi-user.target.wants/orch-dhcp-dns.service"

printf '{{ config_get("user.orch.hostname", instance.name) }}\n' >"$work/templates/hostname.tpl"
printf '127.0.0.1 localhost\n127.0.1.1 {{ config_get("user.orch.hostname", instance.name) }}\n' >"$work/templates/hosts.tpl"
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
tar -C "$root" -czf "$work/rootfs.tar.gz" .
incus image delete "$alias" >/dev/null 2>&1 || true
incus image import "$work/meta.tar.gz" "$work/rootfs.tar.gz" --alias "$alias" >/dev/null
incus image set-property "$alias" orch.docker-image "$want"
incus image set-property "$alias" orch.recipe "$recipe"
