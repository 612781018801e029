#!/bin/sh
# dhclient's script for a test guest: apply the address, record what the server said.
# STATE is replaced with the guest's state file when the guest is set up.
case "$reason" in
  PREINIT) ip link set "$interface" up ;;
  BOUND|RENEW|REBIND|REBOOT)
    ip addr flush dev "$interface"
    ip addr add "$new_ip_address/$new_subnet_mask" dev "$interface"
    echo "$reason ip=$new_ip_address dns=$new_domain_name_servers search=$new_domain_search domain=$new_domain_name" >> "STATE" ;;
  EXPIRE|FAIL|RELEASE|STOP)
    ip addr flush dev "$interface"
    echo "$reason" >> "STATE" ;;
esac
exit 0
