# Sourced by config.sh from the runner root: saves PATH to .path and appends well-known
# variables to .env unless .env already sets them (as actions/runner's env.sh does).

[ -f .env ] || : > .env

for var_name in LANG JAVA_HOME ANT_HOME M2_HOME ANDROID_HOME ANDROID_SDK_ROOT GRADLE_HOME \
    NVM_BIN NVM_PATH LD_LIBRARY_PATH PERL5LIB; do
    if ! grep -q "^${var_name}=" .env 2>/dev/null; then
        eval "var_value=\${${var_name}:-}"
        if [ -n "$var_value" ]; then
            printf '%s=%s\n' "$var_name" "$var_value" >> .env
        fi
    fi
done
unset var_name var_value

printf '%s\n' "$PATH" > .path
