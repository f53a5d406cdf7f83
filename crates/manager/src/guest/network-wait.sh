# network_wait: waits, in 50 ms steps for at most RM_NETWORK_STEPS (10 s), until the instance has
# an IPv4 route or a global IPv6 address: a container is started before its address is
# configured (measured: 40-80 ms on Incus), and a runner started before that fails to reach
# GitHub. After the bound it goes on regardless (a network without either). Leaves the steps
# taken in $i.
network_wait() {
    i=0
    while [ "$i" -lt "${RM_NETWORK_STEPS:-200}" ]; do
        # A line after the header: a route (read is built in: no process).
        if [ -r "$RM_PROC/net/route" ] && { read -r _ && read -r _; } <"$RM_PROC/net/route"; then break; fi
        if grep -q '^[0-9a-f]* [0-9a-f]* [0-9a-f]* 00 ' "$RM_PROC/net/if_inet6" 2>/dev/null; then break; fi
        i=$((i + 1))
        sleep 0.05 2>/dev/null || sleep 1
    done
}
