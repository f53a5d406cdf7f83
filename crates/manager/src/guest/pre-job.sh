# Job-started hook installed by runner-manager: records the job's metadata for the manager's
# metrics, then, when a policy service is configured (RM_POLICY_URL), asks it whether the job
# may run: with curl (the token goes in on its standard input), or without curl over nc (plain
# HTTP only; RM_POLICY_HOST, RM_POLICY_PORT, RM_POLICY_PATH), the request written by the shell's
# builtin printf, so the token is never an argument of any process. Otherwise it fails closed.
META="${RUNNER_MANAGER_META:-$RM_META_DIR}"
esc() { printf '%s' "$1" | tr -d '\r\n' | sed 's/\\/\\\\/g; s/"/\\"/g'; }
printf '{"timestamp":%s,"workflow":"%s","repo":"%s","github_event":"%s"}\n' \
    "$(date +%s)" "$(esc "$GITHUB_WORKFLOW")" "$(esc "$GITHUB_REPOSITORY")" "$(esc "$GITHUB_EVENT_NAME")" \
    >"$META/pre-job.json.tmp" && mv "$META/pre-job.json.tmp" "$META/pre-job.json"
[ -n "$RM_POLICY_URL" ] || exit 0

TOKEN_FILE="$META/policy-token"
deny() {
    echo "Stopping execution of jobs due to repository setup is not compliant with policies: $1" >&2
    echo refused >"$META/policy-refused"
    # Let the runner report the failed job, then stop it: start.sh runs in its own session, so
    # its process group is the whole runner. `kill -SIG -PGID`: dash rejects `kill -SIG -- -PGID`.
    if [ -s "$META/runner.pgid" ]; then
        (sleep "${RUNNER_MANAGER_DENY_DELAY:-10}"; kill -INT "-$(cat "$META/runner.pgid")") </dev/null >/dev/null 2>&1 &
    fi
    exit 1
}
# event_field JQ_PATH OBJECT KEY: a string field of the event; without jq, the first KEY after
# "OBJECT": { in the flattened file.
event_field() {
    if command -v jq >/dev/null 2>&1; then
        jq -r "$1 // empty" "$GITHUB_EVENT_PATH" 2>/dev/null
    else
        tr -d '\n' <"$GITHUB_EVENT_PATH" | sed "s/.*\"$2\" *: *{//" \
            | grep -o "\"$3\" *: *\"[^\"]*\"" | head -n 1 | sed 's/.*: *"\(.*\)"$/\1/'
    fi
}
[ -s "$TOKEN_FILE" ] || deny "no one-time token"
TOKEN="$(cat "$TOKEN_FILE")"
rm -f "$TOKEN_FILE"
REPO="$(esc "$GITHUB_REPOSITORY")"
case "$GITHUB_EVENT_NAME" in
    workflow_dispatch|push|schedule)
        BODY=$(printf '{"repository_name":"%s","branch_name":"%s","commit_sha":"%s"}' \
            "$REPO" "$(esc "${GITHUB_REF#refs/heads/}")" "$(esc "$GITHUB_SHA")")
        ;;
    pull_request)
        [ -f "$GITHUB_EVENT_PATH" ] || deny "no event file"
        SRC_REPO="$(event_field .pull_request.head.repo.full_name head full_name)"
        SRC_BRANCH="${GITHUB_HEAD_REF:-$(event_field .pull_request.head.ref head ref)}"
        TARGET_BRANCH="${GITHUB_BASE_REF:-$(event_field .pull_request.base.ref base ref)}"
        SHA="$(event_field .pull_request.head.sha head sha)"
        BODY=$(printf '{"repository_name":"%s","source_repository_name":"%s","target_branch_name":"%s","source_branch_name":"%s","commit_sha":"%s"}' \
            "$REPO" "$(esc "$SRC_REPO")" "$(esc "$TARGET_BRANCH")" "$(esc "$SRC_BRANCH")" "$(esc "${SHA:-$GITHUB_SHA}")")
        ;;
    *)
        deny "unsupported event $GITHUB_EVENT_NAME"
        ;;
esac
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY
if command -v curl >/dev/null 2>&1; then
    printf 'header = "Authorization: Bearer %s"\n' "$TOKEN" | curl -fsS --max-time 60 --noproxy '*' \
        --config - -H 'Content-Type: application/json' --data "$BODY" -o /dev/null \
        "$RM_POLICY_URL/$GITHUB_EVENT_NAME/check-run" || deny "policy service refused the job"
elif [ -z "$RM_POLICY_HOST" ]; then
    deny "curl is needed to reach an HTTPS policy service"
elif command -v nc >/dev/null 2>&1; then
    LEN=$(printf '%s' "$BODY" | wc -c | tr -d ' ')
    RESPONSE="$META/policy-response"
    rm -f "$RESPONSE"
    # The request's side stays open until the answer is in (some servers drop a half-closed
    # connection before answering); the server closes after its HTTP/1.0 answer.
    (
        printf 'POST %s/%s/check-run HTTP/1.0\r\nHost: %s:%s\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %s\r\nConnection: close\r\n\r\n%s' \
            "$RM_POLICY_PATH" "$GITHUB_EVENT_NAME" "$RM_POLICY_HOST" "$RM_POLICY_PORT" "$TOKEN" "$LEN" "$BODY"
        i=0
        while [ ! -s "$RESPONSE" ] && [ $i -lt 600 ]; do sleep 0.1 2>/dev/null || sleep 1; i=$((i + 1)); done
    ) | timeout 60 nc -w 10 "$RM_POLICY_HOST" "$RM_POLICY_PORT" >"$RESPONSE"
    STATUS=$(head -n 1 "$RESPONSE")
    rm -f "$RESPONSE"
    case "$STATUS" in
        "HTTP/1."[01]" 2"*) ;;
        *) deny "policy service refused the job" ;;
    esac
else
    deny "neither curl nor nc to reach the policy service"
fi
exit 0
