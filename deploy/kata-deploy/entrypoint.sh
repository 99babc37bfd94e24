#!/bin/sh
# kata-rs-deploy: the entry point of the kata-rs installer DaemonSet (kata-deploy-style).
#
#   entrypoint.sh run        install, label the node, wait; on SIGTERM/SIGINT remove the
#                            label and uninstall (the DaemonSet's command)
#   entrypoint.sh install    install and label, then exit
#   entrypoint.sh uninstall  remove the label and uninstall, then exit
#
# Environment (defaults in brackets):
#   KATA_RS_ROOT        the node's / as mounted in the pod [/host]
#   KATA_RS_FROM        the build outputs in the image [/opt/kata-rs/bin]
#   KATA_RS_NODE_LABEL  the node label set to "true" once installed, removed on uninstall
#                       [katacontainers.io/kata-runtime]; empty: no labelling (e.g. beside
#                       upstream Kata during a migration, use another label)
#   NODE_NAME           this node (the DaemonSet passes spec.nodeName)
#   KATA_RS_CRIO        true / false / auto: also write the CRI-O drop-in (auto: when the
#                       node has /etc/crio or /usr/bin/crio) [auto]
#   KATA_RS_RESTART     true: restart containerd / CRI-O when their config changed [true]
#   KATA_RS_UNINSTALL_ON_STOP  false: leave kata-rs installed when the pod stops [true]
#   KATA_RS_API         the API server [https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT]
#   KATA_RS_SA_DIR      the service account's token and CA
#                       [/var/run/secrets/kubernetes.io/serviceaccount]
set -eu

ROOT=${KATA_RS_ROOT:-/host}
FROM=${KATA_RS_FROM:-/opt/kata-rs/bin}
LABEL=${KATA_RS_NODE_LABEL-katacontainers.io/kata-runtime}
NODE=${NODE_NAME:-}
CRIO=${KATA_RS_CRIO:-auto}
RESTART=${KATA_RS_RESTART:-true}
UNINSTALL_ON_STOP=${KATA_RS_UNINSTALL_ON_STOP:-true}
SA=${KATA_RS_SA_DIR:-/var/run/secrets/kubernetes.io/serviceaccount}
API=${KATA_RS_API:-https://${KUBERNETES_SERVICE_HOST:-kubernetes.default.svc}:${KUBERNETES_SERVICE_PORT:-443}}
KATA_RS=$FROM/kata-rs

log() { echo "kata-rs-deploy: $*" >&2; }

# label VALUE: sets the node label to "VALUE", or removes it when VALUE is "null"
# (a JSON merge patch of the node's labels; the token goes to curl in a file, never on
# its command line).
label() {
    [ -n "$LABEL" ] || return 0
    if [ -z "$NODE" ]; then
        log "NODE_NAME is not set: cannot label the node"
        return 1
    fi
    if [ "$1" = null ]; then v=null; else v="\"$1\""; fi
    hdr=$(mktemp)
    chmod 600 "$hdr"
    printf 'Authorization: Bearer %s\n' "$(cat "$SA/token")" >"$hdr"
    set -- -sS --fail --max-time 30 -X PATCH -H "@$hdr" \
        -H 'Content-Type: application/merge-patch+json' \
        --data "{\"metadata\":{\"labels\":{\"$LABEL\":$v}}}"
    if [ -f "$SA/ca.crt" ]; then set -- "$@" --cacert "$SA/ca.crt"; fi
    rc=0
    curl "$@" -o /dev/null "$API/api/v1/nodes/$NODE" || rc=$?
    rm -f "$hdr"
    return $rc
}

install() {
    set -- install --root "$ROOT" --from "$FROM"
    case $CRIO in
    true) set -- "$@" --crio ;;
    auto) if [ -d "$ROOT/etc/crio" ] || [ -e "$ROOT/usr/bin/crio" ]; then set -- "$@" --crio; fi ;;
    false) ;;
    *) log "KATA_RS_CRIO must be true, false or auto, not $CRIO"; return 1 ;;
    esac
    if [ "$RESTART" = true ]; then set -- "$@" --restart; fi
    "$KATA_RS" "$@"
    label true
    [ -z "$LABEL" ] || log "node $NODE labelled $LABEL=true"
}

uninstall() {
    # The label goes first, so that no new kata pod is scheduled here meanwhile.
    if ! label null; then log "could not remove the label $LABEL (uninstalling anyway)"; fi
    set -- uninstall --root "$ROOT"
    if [ "$RESTART" = true ]; then set -- "$@" --restart; fi
    "$KATA_RS" "$@"
}

case ${1:-run} in
install) install ;;
uninstall) uninstall ;;
run)
    stop=0
    trap 'stop=1' TERM INT
    install
    log "installed; uninstalls on SIGTERM"
    while [ "$stop" = 0 ]; do
        sleep 1 &
        wait $! || true
    done
    if [ "$UNINSTALL_ON_STOP" = true ]; then
        uninstall
        log "uninstalled"
    else
        log "stopping; kata-rs stays installed (KATA_RS_UNINSTALL_ON_STOP=$UNINSTALL_ON_STOP)"
    fi
    ;;
*)
    log "usage: $0 [run|install|uninstall]"
    exit 2
    ;;
esac
