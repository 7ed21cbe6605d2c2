# Torsion's tasks. `just --list` shows them all, each with the comment
# line right above it; longer explanations sit in comment lines above that.

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

# Twisted comes with its TLS extras (pyOpenSSL, service_identity) for the
# TLS interop tests; a .venv without them is refilled.
#
# Create .venv with Twisted (for the interoperability tests) if needed.
setup:
    #!/usr/bin/env bash
    set -euo pipefail
    if ! "{{venv}}/bin/python" -c "import twisted, OpenSSL, service_identity" 2>/dev/null; then
        python3 -m venv "{{venv}}"
        "{{venv}}/bin/pip" install --quiet --disable-pip-version-check -r requirements-dev.txt
    fi

# The doc tests include every Rust block of README.md and docs/*.md
# (compiled as doc tests of torsion-examples). Then the reactor, transport
# and protocol tests run again on the portable `polling` backend. Last,
# `cargo package` checks each publishable crate, in a target dir of its
# own that starts empty each run (each packaged crate builds against the
# packaged crates below it, with their dependencies): about 30 s here.
#
# Lint, then every test: unit, loopback, Twisted interop, doc tests.
test: setup lint
    #!/usr/bin/env bash
    set -euo pipefail
    mkdir -p target
    TORSION_PYTHON="{{venv}}/bin/python" TORSION_REQUIRE_TWISTED=1 \
        cargo test --workspace 2>&1 | tee target/test.log
    # The portable backend (the `polling` crate), used off Linux, on Linux.
    cargo test -p torsion-reactor -p torsion-transport -p torsion-protocol \
        --features torsion-reactor/polling-backend 2>&1 | tee -a target/test.log
    # torsion-tls's `native-roots` feature (the `aws-lc-rs` one builds C
    # for a minute: `cargo test -p torsion-tls --features aws-lc-rs`).
    cargo test -p torsion-tls --features native-roots --test native_roots --test endpoints \
        2>&1 | tee -a target/test.log
    # Every publishable crate (not `publish = false`) packages, and its
    # packaged sources build on their own against the other packaged
    # crates: a file left out or a path-only dependency fails here.
    # Packaging unpublished crates that depend on each other in one run
    # needs Cargo 1.90 or later (the crates themselves build with 1.82),
    # and access to the crates.io index, which their dependencies are
    # resolved against.
    cargo_minor=$(cargo --version | sed -E 's/^cargo 1\.([0-9]+)\..*/\1/')
    if ! [[ "$cargo_minor" =~ ^[0-9]+$ ]] || (( cargo_minor < 90 )); then
        echo "just test: the package check needs Cargo >= 1.90, found: $(cargo --version)" >&2
        exit 1
    fi
    publishable=$(cargo metadata --no-deps --format-version 1 | python3 -c 'import json, sys
    print(" ".join("-p " + p["name"] for p in json.load(sys.stdin)["packages"] if p["publish"] != []))')
    # Cargo treats the packaged crates as registry crates, which it takes
    # to never change: it unpacks them (from a temporary local registry)
    # into CARGO_HOME/registry/src/-HASH/ and builds them in the target dir
    # under names that depend on the version only, and reuses both when
    # they change. So a second run in the same checkout would check the
    # first run's sources. Each run starts from a fresh unpacking (local
    # registries' directories start with "-"; crates.io's are untouched)
    # and target dir of its own.
    rm -rf "${CARGO_HOME:-$HOME/.cargo}"/registry/src/-*/torsion-* target/package-check
    CARGO_TARGET_DIR=target/package-check \
        cargo package --quiet --allow-dirty $publishable 2>&1 | tee -a target/test.log
    # Network tests that could not build their namespaces print SKIPPED
    # (they fail instead under TORSION_REQUIRE_NETNS=1, which reaches them
    # from the environment, as .ci/run sets it when root).
    # A skipped test counts as passed in libtest's own tally; its SKIPPED
    # line (stderr) may land inside a `test ... ok` line (stdout).
    awk '/^test result:/ { passed += $4; failed += $6 } /SKIPPED [a-z0-9_]*: / { skipped++ } END { printf "%d passed (%d of them skipped), %d failed\n", passed, skipped, failed }' target/test.log
    grep -o 'SKIPPED [a-z0-9_]*: .*' target/test.log || true

# Formatting, clippy and the API docs' links, warnings denied.
lint:
    cargo fmt --all -- --check
    cargo fmt --manifest-path fuzz/Cargo.toml -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet

# Reactor timers against tokio's, the framing receivers, pipelined lines
# (LineReceiver against tokio + LinesCodec and a mio loop), then the echo
# suite: Torsion, tokio current-thread and multi-thread, a mio loop, and
# Torsion on two reactors, on four workloads, plus idle memory and system
# calls. Results go to bench/results/; docs/performance.md reads them.
#
# Every benchmark: reactor, framing, and the echo suite against tokio and mio.
bench:
    cargo build --quiet --release -p torsion-bench
    ./target/release/torsion-bench reactor
    ./target/release/torsion-bench turns
    ./target/release/torsion-bench framing
    ./target/release/torsion-bench pipelined
    ./target/release/torsion-bench async
    ./target/release/torsion-bench echo --servers torsion,torsion-async,tokio-ct
    ./target/release/torsion-bench udp
    ./target/release/torsion-bench process
    ./target/release/torsion-bench tls
    ./target/release/torsion-bench tls-idle
    ./target/release/torsion-bench fsevents
    ./target/release/torsion-bench suite

# The single-threaded servers, one short round; writes
# bench/results/quick.*.
#
# The echo suite in about 30 s, for a check before a change.
bench-quick:
    cargo build --quiet --release -p torsion-bench
    ./target/release/torsion-bench suite --quick

# For example: just bench-echo --connections 8 --size 16384 --rate 20000
#
# One echo workload with options of your own.
bench-echo *args:
    cargo build --quiet --release -p torsion-bench
    ./target/release/torsion-bench echo {{args}}

# 10,000 connections, 1 GiB through the echo server, resets, SIGKILLed
# clients, half-closes, slow and idle peers, and running out of
# descriptors (`just test` runs a bounded version); then the network
# suite at full size (loss, a slow link, partitions, TLS; as root, in
# network namespaces) and its 10-minute mixed soak, whose plot goes to
# docs/network-soak.svg. See docs/reliability.md.
#
# The full soak and fault suite (release build).
soak:
    TORSION_SOAK=full cargo test --release -p torsion-echo --test soak -- --nocapture --test-threads 1
    cargo test --release -p torsion-protocol --test emfile -- --nocapture
    TORSION_SOAK=full cargo test --release -p torsion-echo --test network -- --nocapture --test-threads 1
    TORSION_SOAK=full TORSION_SOAK_CSV="$PWD/target/network-soak.csv" \
        cargo test --release -p torsion-tls --test network -- --nocapture --test-threads 1
    python3 docs/soak_plot.py target/network-soak.csv docs/network-soak.svg

# Needs valgrind (Debian: apt install valgrind).
#
# The socket integration tests under valgrind: any definite leak fails.
leaks:
    #!/usr/bin/env bash
    set -euo pipefail
    command -v valgrind >/dev/null || { echo "just leaks needs valgrind"; exit 1; }
    wanted=" reactor timers lifecycle spin tcp unix udp flow producers reset panics reconnecting descriptors policies factories backpressure "
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

# Installs the two standard libraries with rustup if they are missing
# (needs rustup and its servers: not part of `just test`). Only `cargo
# check` and clippy: there is no cross linker, and crates with C build
# scripts (ring, for torsion-tls) cannot be checked this way. Nothing
# here runs on those systems; see docs/reliability.md.
#
# Type-check the core crates and their tests for FreeBSD and macOS.
check-unix:
    #!/usr/bin/env bash
    set -euo pipefail
    targets=(x86_64-unknown-freebsd x86_64-apple-darwin)
    installed=$(rustup target list --installed)
    for target in "${targets[@]}"; do
        grep -qx "$target" <<<"$installed" || rustup target add "$target"
    done
    for target in "${targets[@]}"; do
        echo "== $target"
        cargo clippy --target "$target" --all-targets \
            -p torsion-reactor -p torsion-transport -p torsion-protocol -p torsion-echo \
            -- -D warnings
    done

# Needs the nightly toolchain with the miri component. The unsafe code
# itself is system calls (epoll, sockets, signals), which Miri cannot
# execute; those tests are marked ignored under Miri.
#
# The timer heap, slab, write queue and framing receivers under Miri.
miri:
    cargo +nightly miri test -p torsion-reactor -p torsion-transport --lib
    cargo +nightly miri test -p torsion-protocol --test framing --test hostile

# Needs the nightly toolchain; installs cargo-fuzz if missing. Crashes
# land in fuzz/artifacts/ and become regression tests in
# crates/protocol/tests/hostile.rs.
#
# Fuzz the framing receivers, endpoint parser and TLS wrapper, `seconds` each.
fuzz seconds="60":
    #!/usr/bin/env bash
    set -euo pipefail
    command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
    cd fuzz
    for target in line netstring prefixed endpoint tls; do
        echo "== $target ({{seconds}} s)"
        cargo +nightly fuzz run -O "$target" -- -max_total_time={{seconds}} -max_len=4096
    done

# API documentation, with broken links and missing docs denied.
doc:
    RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps
