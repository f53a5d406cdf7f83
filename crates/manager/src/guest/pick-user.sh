# Picks the runner's user from the passwd file into RM_USER, RM_UID, RM_GID and RM_HOME:
# `runner`, else `ubuntu` (either only if its uid is not 0), else root.
RM_USER=root RM_UID=0 RM_GID=0 RM_HOME=/root
while IFS=: read -r n _ u g _ h _ || [ -n "$n" ]; do
    case "$n" in runner|ubuntu) ;; *) continue ;; esac
    case "$u:$g" in *[!0-9:]*|:*|*:) continue ;; esac
    [ "$u" != 0 ] || continue
    if [ "$n" = runner ] || [ "$RM_USER" = root ]; then
        RM_USER=$n RM_UID=$u RM_GID=$g RM_HOME=${h:-/home/$n}
    fi
done <"$RM_PASSWD"
