# Torsion's tasks. `just --list` shows them all.

set shell := ["bash", "-euo", "pipefail", "-c"]

venv := justfile_directory() / ".venv"

# Run the whole test suite (the default task).
default: test

# Run the echo server, run the echo client against it, stop the server.
demo port="8000":
    @cargo build --quiet -p torsion-examples --examples
    @./target/debug/examples/echo_server {{port}} & server=$!; \
    trap 'kill $server 2>/dev/null || true' EXIT; \
    for _ in $(seq 100); do \
        (exec 3<>/dev/tcp/127.0.0.1/{{port}}) 2>/dev/null && break; sleep 0.05; \
    done; \
    ./target/debug/examples/echo_client localhost {{port}}

# Create .venv with Twisted (for the interoperability tests) if needed.
setup:
    #!/usr/bin/env bash
    set -euo pipefail
    if ! "{{venv}}/bin/python" -c "import twisted" 2>/dev/null; then
        python3 -m venv "{{venv}}"
        "{{venv}}/bin/pip" install --quiet --disable-pip-version-check -r requirements-dev.txt
    fi

# Lint, then every test: unit, loopback integration, Twisted interop, doc tests.
test: setup lint
    #!/usr/bin/env bash
    set -euo pipefail
    mkdir -p target
    TORSION_PYTHON="{{venv}}/bin/python" TORSION_REQUIRE_TWISTED=1 \
        cargo test --workspace 2>&1 | tee target/test.log
    # The portable backend (the `polling` crate), used off Linux, on Linux.
    cargo test -p torsion-reactor -p torsion-transport -p torsion-protocol \
        --features torsion-reactor/polling-backend 2>&1 | tee -a target/test.log
    awk '/^test result:/ { passed += $4; failed += $6 } END { printf "%d passed, %d failed\n", passed, failed }' target/test.log

# Formatting and clippy, warnings denied.
lint:
    cargo fmt --all -- --check
    cargo fmt --manifest-path fuzz/Cargo.toml -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# Benchmarks, side by side with peers: reactor (timers against tokio's),
# framing, then the echo suite (Torsion, tokio current-thread and
# multi-thread, a mio loop, Torsion on two reactors; four workloads, idle
# memory, system calls), written to bench/results/ (see docs/performance.md).
bench:
    cargo build --quiet --release -p torsion-bench
    ./target/release/torsion-bench reactor
    ./target/release/torsion-bench framing
    ./target/release/torsion-bench suite

# The echo suite in about 30 s (the single-threaded servers, one short
# round), for a check before a change; writes bench/results/quick.*.
bench-quick:
    cargo build --quiet --release -p torsion-bench
    ./target/release/torsion-bench suite --quick

# One echo workload with options of your own, e.g.
# `just bench-echo --connections 8 --size 16384 --rate 20000`.
bench-echo *args:
    cargo build --quiet --release -p torsion-bench
    ./target/release/torsion-bench echo {{args}}

# The full soak and fault suite: 10,000 connections, 1 GiB through the echo
# server, resets, SIGKILLed clients, half-closes, slow and idle peers, and
# running out of descriptors (`just test` runs a bounded version).
soak:
    TORSION_SOAK=full cargo test --release -p torsion-echo --test soak -- --nocapture --test-threads 1
    cargo test --release -p torsion-protocol --test emfile -- --nocapture

# The socket integration tests under valgrind: any definite leak fails.
# Needs valgrind (Debian: apt install valgrind).
leaks:
    #!/usr/bin/env bash
    set -euo pipefail
    command -v valgrind >/dev/null || { echo "just leaks needs valgrind"; exit 1; }
    wanted=" reactor timers lifecycle tcp unix udp flow panics reconnecting descriptors policies backpressure "
    cargo test --no-run --workspace --message-format=json 2>/dev/null \
        | python3 -c 'import json, sys
    for m in map(json.loads, sys.stdin):
        if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
            print(m["target"]["name"], m["executable"])' \
        | while read -r name exe; do
            [[ "$wanted" == *" $name "* ]] || continue
            echo "== $name"
            valgrind --quiet --leak-check=full --show-leak-kinds=definite \
                --errors-for-leak-kinds=definite --error-exitcode=99 \
                "$exe" --test-threads 1 --quiet
        done

# What can run under Miri (needs the nightly toolchain with the miri
# component): the timer heap, slab, write queue and framing receivers.
# The unsafe code itself is system calls (epoll, sockets, signals), which
# Miri cannot execute; those tests are marked ignored under Miri.
miri:
    cargo +nightly miri test -p torsion-reactor -p torsion-transport --lib
    cargo +nightly miri test -p torsion-protocol --test framing --test hostile

# Fuzz every parser (each framing receiver, the endpoint strings) for
# `seconds` each. Needs the nightly toolchain; installs cargo-fuzz if
# missing. Crashes land in fuzz/artifacts/ and become regression tests in
# crates/protocol/tests/hostile.rs.
fuzz seconds="60":
    #!/usr/bin/env bash
    set -euo pipefail
    command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
    cd fuzz
    for target in line netstring prefixed endpoint; do
        echo "== $target ({{seconds}} s)"
        cargo +nightly fuzz run -O "$target" -- -max_total_time={{seconds}} -max_len=4096
    done

# API documentation, with broken links and missing docs denied.
doc:
    RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps
