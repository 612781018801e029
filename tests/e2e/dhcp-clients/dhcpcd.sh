#!/bin/sh
# dhcpcd's hook for a test guest (dhcpcd applies the address itself): record what it got.
case "$reason" in
  BOUND|RENEW|REBIND|REBOOT|STATIC)
    echo "$reason ip=$new_ip_address dns=$new_domain_name_servers search=$new_domain_search domain=$new_domain_name" >> "STATE" ;;
  EXPIRE|NAK|RELEASE|STOP|FAIL) echo "$reason" >> "STATE" ;;
esac
exit 0
