#!/bin/sh
# Prepares a real server for dl7's direct server return: the front node forwards VIP traffic
# to this host either with only the MAC rewritten (l2, the IPVS-DR model) or inside an outer
# IPIP/GUE header (ipip, gue: the real may sit behind routers). Either way this host must
# accept packets for the VIP without ever answering ARP/ND for it (only the front does), and
# must send replies from the VIP straight to the client.
#
#   deploy/real-server-setup.sh VIP [VIP ...]                 add (idempotent)
#   deploy/real-server-setup.sh --decap IFACE VIP [VIP ...]   also decapsulate on IFACE
#   deploy/real-server-setup.sh --remove VIP [...]            undo the addresses and detach
#                                                             the decapsulator if attached
#                                                             (the advmss stays on the routes)
#
# --decap IFACE (for reals the front reaches with --encap ipip|gue): attaches dl7's
# decapsulator to IFACE (`l4-ctl decap attach`, native XDP; DECAP_MODE=generic or tc where
# that fails) - no ipip/fou module or tunnel device is needed - and sets an advertised MSS on
# every route through IFACE, so that clients' segments still fit IFACE's MTU once the front
# has wrapped them (IPv4: MTU - 40 - 28 for GUE's outer IPv4 + UDP; IPv6: MTU - 60 - 48).
# The l4-ctl binary is taken from $L4_CTL (default: l4-ctl on PATH); DECAP_PIN_DIR sets its
# pin directory (default /sys/fs/bpf/dl7-decap).
#
# VIP is an address without port or prefix, IPv4 or IPv6. Run as root on each real server
# (the testbed runs it inside every server's network namespace).
set -eu

usage() {
    echo "usage: $0 [--remove] [--decap IFACE] VIP [VIP ...]" >&2
    exit 2
}

remove=0
decap=""
while [ "$#" -gt 0 ]; do
    case "$1" in
        --remove) remove=1; shift ;;
        --decap)
            [ "$#" -ge 2 ] || usage
            decap=$2
            shift 2
            ;;
        --*) usage ;;
        *) break ;;
    esac
done
[ "$#" -ge 1 ] || usage
l4ctl=${L4_CTL:-l4-ctl}
pin_args=""
if [ -n "${DECAP_PIN_DIR:-}" ]; then
    pin_args="--decap-pin-dir $DECAP_PIN_DIR"
fi
if [ -n "$decap" ] && ! ip link show dev "$decap" >/dev/null 2>&1; then
    echo "$0: --decap $decap: no such interface" >&2
    exit 2
fi

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
if [ "$remove" = 1 ]; then
    # The decapsulator, if this host has one attached (quietly: most reals have none).
    # shellcheck disable=SC2086
    if "$l4ctl" decap $pin_args status >/dev/null 2>&1; then
        "$l4ctl" decap $pin_args detach
    fi
    exit 0
fi
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
if [ -n "$decap" ]; then
    # shellcheck disable=SC2086
    "$l4ctl" decap $pin_args attach --iface "$decap" --mode "${DECAP_MODE:-native}"
    mtu=$(ip -o link show dev "$decap" | sed -n 's/.* mtu \([0-9]*\).*/\1/p')
    # Every route through IFACE (the default route among them): `ip route change` with the
    # route as listed (less what `ip` prints but does not take back), the device and the MSS.
    # Idempotent. A route this cannot rewrite (multipath, say) gets a warning, not a stop.
    strip='s/ advmss [0-9]*//; s/ linkdown//; s/ pref [a-z]*//; s/ expires \([0-9]*\)sec/ expires \1/'
    for family in 4 6; do
        overhead=$([ "$family" = 4 ] && echo 68 || echo 108)
        ip "-$family" route show dev "$decap" 2>/dev/null | grep -v -e '^fe80' -e 'nexthop' |
            sed -e "$strip" | while read -r route; do
            # shellcheck disable=SC2086
            ip "-$family" route change $route dev "$decap" advmss $((mtu - overhead)) ||
                echo "$0: warning: no advmss on the route '$route': set it by hand" >&2
        done
    done
fi
echo "dl7 real server ready for: $*"
