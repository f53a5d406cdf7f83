# Job-completed hook installed by runner-manager: records when the job ended.
META="${RUNNER_MANAGER_META:-$RM_META_DIR}"
printf '{"timestamp":%s,"status":"normal"}\n' "$(date +%s)" >"$META/post-job.json.tmp" \
    && mv "$META/post-job.json.tmp" "$META/post-job.json"
exit 0
