# Shared by scripts/demo and scripts/test: make sure the system packages a command needs exist.
# As root, missing packages are installed with apt-get; otherwise the exact install line is printed
# and the script stops.

# need_packages "command:package" ... : checks each command, installs the packages of missing ones.
need_packages() {
    local missing=() pair cmd pkg
    for pair in "$@"; do
        cmd=${pair%%:*}
        pkg=${pair#*:}
        if ! command -v "$cmd" >/dev/null 2>&1 && [ ! -x "$cmd" ]; then
            missing+=("$pkg")
        fi
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    # De-duplicate while keeping order.
    local uniq=() p q seen
    for p in "${missing[@]}"; do
        seen=0
        for q in "${uniq[@]}"; do [ "$p" = "$q" ] && seen=1; done
        [ $seen -eq 0 ] && uniq+=("$p")
    done
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "Installing missing system packages: ${uniq[*]}" >&2
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${uniq[@]}" >&2
    else
        echo "Missing system packages. Install them with:" >&2
        echo "    sudo apt-get install -y ${uniq[*]}" >&2
        return 1
    fi
}

need_cargo() {
    if ! command -v cargo >/dev/null 2>&1; then
        echo "cargo (Rust 1.89 or newer) is needed. Install it with rustup (https://rustup.rs) and retry." >&2
        return 1
    fi
}
