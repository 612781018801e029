#!/bin/sh
# udhcpc's script for a test guest: apply the address, record what the server said.
case "$1" in
  deconfig) ip addr flush dev "$interface"; ip link set "$interface" up ;;
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/$mask" dev "$interface"
    echo "$1 ip=$ip dns=$dns search=$search domain=$domain" >> "STATE" ;;
  *) echo "$1" >> "STATE" ;;
esac
exit 0
