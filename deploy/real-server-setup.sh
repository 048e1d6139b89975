#!/bin/sh
# Prepares a real server for dl7's direct server return (the IPVS-DR model): the front node
# forwards VIP traffic to this host with only the MAC rewritten, so this host must accept
# packets for the VIP without ever answering ARP/ND for it (only the front does), and must
# send replies from the VIP straight to the client.
#
#   deploy/real-server-setup.sh VIP [VIP ...]        add (idempotent)
#   deploy/real-server-setup.sh --remove VIP [...]   undo the addresses
#
# VIP is an address without port or prefix, IPv4 or IPv6. Run as root on each real server
# (the testbed runs it inside every server's network namespace).
set -eu

usage() {
    echo "usage: $0 [--remove] VIP [VIP ...]" >&2
    exit 2
}

remove=0
if [ "${1:-}" = "--remove" ]; then
    remove=1
    shift
fi
[ "$#" -ge 1 ] || usage

for vip in "$@"; do
    case "$vip" in
        */* | "") echo "$0: $vip: give the address without a prefix length" >&2; exit 2 ;;
        *:*) prefix=128 ;;
        *.*.*.*) prefix=32 ;;
        *) echo "$0: $vip is not an IPv4 or IPv6 address" >&2; exit 2 ;;
    esac
    if [ "$remove" = 1 ]; then
        ip addr del "$vip/$prefix" dev lo 2>/dev/null || true
        continue
    fi
    # The VIP on lo: the kernel accepts packets for it and replies come from it.
    if ! ip addr show dev lo | grep -qw "inet6\? $vip/$prefix"; then
        ip addr add "$vip/$prefix" dev lo
    fi
done
[ "$remove" = 1 ] && exit 0
ip link set lo up

# Never answer ARP for an address that is not on the receiving interface (lo's VIP), and
# never use the VIP as the source of our own ARP requests: only the front owns the VIP on
# the segment.
sysctl -q -w net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2
for conf in /proc/sys/net/ipv4/conf/*; do
    dev=${conf##*/}
    [ "$dev" = lo ] && continue
    sysctl -q -w "net.ipv4.conf.$dev.arp_ignore=1" "net.ipv4.conf.$dev.arp_announce=2"
done
# Requests arrive on the NIC for an address on lo: strict reverse-path filtering would drop
# them on multi-homed hosts. Loose mode (2) keeps spoofing protection for unroutable sources.
sysctl -q -w net.ipv4.conf.all.rp_filter=2 net.ipv4.conf.default.rp_filter=2
for conf in /proc/sys/net/ipv4/conf/*; do
    sysctl -q -w "net.ipv4.conf.${conf##*/}.rp_filter=2"
done
echo "dl7 real server ready for: $*"
