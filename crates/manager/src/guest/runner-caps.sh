# runner_has SCRIPT OPTION: whether the runner's SCRIPT (`config.sh`, `run.sh`) takes `--OPTION`
# (run in RM_RUNNER_DIR). A baked image answers from RM_CAPS_FILE, written when it was built
# (setup.sh in bake mode: one `SCRIPT --OPTION` line per option the runner takes), since its
# runner never changes; elsewhere `SCRIPT --help` is asked (the real runner's `--help` starts
# .NET: hundreds of ms).
runner_has() {
    if [ -f "$RM_CAPS_FILE" ]; then
        grep -qx -- "$1 --$2" "$RM_CAPS_FILE"
    else
        "./$1" --help 2>&1 | grep -q -- "--$2"
    fi
}
