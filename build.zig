//! Ringway's only build description. `zig build` compiles the relay
//! (`ringway`), the mock upstream (`ringway-mock`), the ops tool (`ringctl`)
//! and the unit tests, each from the modules it uses; `run`
//! starts the demo relay beside the mock; `test` runs every unit and
//! integration test and ends with one "N passed, N failed" line.
const std = @import("std");

/// The C sources of each module (each directory owns one concern, see
/// README "Layout"). A binary links only the modules it uses: ringctl and
/// the text tests need no RocksDB, wolfSSL, liburing or argon2, and the mock
/// upstream is in ringway-mock alone.
const util_sources = [_][]const u8{"src/util/assert.c"};
const text_sources = [_][]const u8{
    "src/text/buffer.c",
    "src/text/number.c",
    "src/text/utf8.c",
    "src/text/time.c",
};
const json_sources = [_][]const u8{"src/json/json.c"};
const http_sources = [_][]const u8{
    "src/http/request.c",
    "src/http/response.c",
    "src/http/chunked.c",
    "src/http/writer.c",
};
const sse_sources = [_][]const u8{ "src/sse/sse.c", "src/sse/usage.c" };
const tls_sources = [_][]const u8{"src/tls/tls.c"};
const config_sources = [_][]const u8{"src/config/config.c"};
const loop_sources = [_][]const u8{"src/loop/loop.c"};
const router_sources = [_][]const u8{"src/router/router.c"};
const upstream_sources = [_][]const u8{"src/upstream/upstream.c"};
const server_sources = [_][]const u8{"src/server/server.c"};
const relay_sources = [_][]const u8{
    "src/relay/reply.c",
    "src/relay/worker.c",
    "src/relay/dispatch.c",
    "src/relay/admit.c",
    "src/relay/limits.c",
    "src/relay/route.c",
    "src/relay/plan.c",
    "src/relay/stream.c",
    "src/relay/settle.c",
};
const channel_sources = [_][]const u8{"src/channel/channel.c"};
const account_sources = [_][]const u8{"src/account/account.c"};
const auth_sources = [_][]const u8{ "src/auth/auth.c", "src/auth/jwt.c", "src/auth/password.c" };
const ledger_sources = [_][]const u8{"src/ledger/ledger.c"};
const limit_sources = [_][]const u8{"src/limit/limit.c"};
const breaker_sources = [_][]const u8{"src/breaker/breaker.c"};
const address_sources = [_][]const u8{"src/address/address.c"};
const guard_sources = [_][]const u8{"src/guard/guard.c"};
const store_sources = [_][]const u8{ "src/store/store.c", "src/store/codec.c", "src/store/thread.c" };
/// src/admin/text.c is the part of the admin module ringctl shares.
const admin_text_sources = [_][]const u8{"src/admin/text.c"};
const admin_sources = [_][]const u8{
    "src/admin/admin.c",
    "src/admin/operations.c",
} ++ admin_text_sources;
const portal_sources = [_][]const u8{
    "src/portal/endpoints.c",
    "src/portal/channels.c",
    "src/portal/jobs.c",
};
const control_sources = [_][]const u8{"src/control/control.c"};
const mock_sources = [_][]const u8{"src/mock/mock.c"};

/// What the text unit test and everything else build on: libc only. Client
/// addresses are here because the config, the server and the guards all
/// use them.
const base_sources = util_sources ++ text_sources ++ address_sources;
/// The relay and everything it runs: every module but the mock.
const core_sources = base_sources ++ json_sources ++ http_sources ++ sse_sources ++ tls_sources ++ config_sources ++
    loop_sources ++ router_sources ++ upstream_sources ++ server_sources ++ relay_sources ++ channel_sources ++
    account_sources ++ auth_sources ++ ledger_sources ++ limit_sources ++ breaker_sources ++ guard_sources ++ store_sources ++ admin_sources ++ portal_sources ++
    control_sources;
const core_libraries = [_][]const u8{ "uring", "wolfssl", "rocksdb", "argon2", "pthread" };
/// The mock upstream: an HTTP(S) server on the same loop, nothing of the
/// relay's accounts, billing or store.
const mock_program_sources = base_sources ++ json_sources ++ http_sources ++ tls_sources ++ loop_sources ++
    server_sources ++ mock_sources;
const mock_libraries = [_][]const u8{ "uring", "wolfssl", "pthread" };
/// ringctl: an HTTP client of the admin API that reads the config file
/// (config, and ledger for its money values); libc only.
const ringctl_sources = base_sources ++ json_sources ++ http_sources ++ config_sources ++ ledger_sources ++
    admin_text_sources;
/// The fuzz harnesses: the pure parsers alone, as tests/fuzz/run.sh links
/// them for libFuzzer; libc only.
const fuzz_sources = base_sources ++ json_sources ++ http_sources ++ sse_sources ++ config_sources ++ ledger_sources;

/// One executable per file; each prints "N passed, N failed" last.
const unit_tests = [_][]const u8{
    "text",
    "http",
    "json",
    "sse",
    "tls",
    "config",
    "channel",
    "account",
    "auth",
    "ledger",
    "limit",
    "breaker",
    "store",
    "admin",
    "loop",
    "server",
    "upstream",
    "router",
    "address",
    "guard",
};

const c_flags = [_][]const u8{
    "-std=c11",
    "-D_GNU_SOURCE",
    "-Wall",
    "-Wextra",
    "-Wshadow",
    "-Wno-unused-parameter",
    "-Werror",
    "-fno-strict-aliasing",
};

/// The sources and system libraries of one binary.
const Parts = struct {
    sources: []const []const u8,
    libraries: []const []const u8,
};

const core_parts = Parts{ .sources = &core_sources, .libraries = &core_libraries };
const base_parts = Parts{ .sources = &base_sources, .libraries = &.{} };
const mock_parts = Parts{ .sources = &mock_program_sources, .libraries = &mock_libraries };
const ringctl_parts = Parts{ .sources = &ringctl_sources, .libraries = &.{} };
const fuzz_parts = Parts{ .sources = &fuzz_sources, .libraries = &.{} };

fn addParts(b: *std.Build, module: *std.Build.Module, parts: Parts) void {
    module.addIncludePath(b.path("include"));
    module.addCSourceFiles(.{ .files = parts.sources, .flags = &c_flags });
    for (parts.libraries) |name| module.linkSystemLibrary(name, .{});
}

fn addProgram(
    b: *std.Build,
    name: []const u8,
    main_source: []const u8,
    parts: Parts,
    target: std.Build.ResolvedTarget,
    optimize: std.builtin.Optimize,
) *std.Build.Step.Compile {
    const module = b.createModule(.{ .target = target, .optimize = optimize, .link_libc = true });
    addParts(b, module, parts);
    module.addCSourceFiles(.{ .files = &.{main_source}, .flags = &c_flags });
    const exe = b.addExecutable(.{ .name = name, .root_module = module });
    b.installArtifact(exe);
    return exe;
}

pub fn build(b: *std.Build) void {
    const target = b.standardTargetOptions(.{});
    // Release by default: `zig build run` is what resellers start. Our own
    // assertions (RW_ASSERT) stay on in every mode.
    const optimize = b.option(std.builtin.Optimize, "optimize", "debug, safe, fast or small (default: fast)") orelse .fast;

    const ringway = addProgram(b, "ringway", "src/main.c", core_parts, target, optimize);
    const mock = addProgram(b, "ringway-mock", "src/mock/main.c", mock_parts, target, optimize);
    // ringctl, the ops tool (tools/ringctl): the admin API's client.
    const ringctl = addProgram(b, "ringctl", "tools/ringctl/ringctl.c", ringctl_parts, target, optimize);
    ringctl.root_module.addCSourceFiles(.{ .files = &.{"tools/ringctl/client.c"}, .flags = &c_flags });

    // `zig build run`: the demo relay and the mock upstream it routes to.
    const run_demo = b.addSystemCommand(&.{ "bash", "tools/demo.sh" });
    run_demo.addArtifactArg(ringway);
    run_demo.addArtifactArg(mock);
    run_demo.addArtifactArg(ringctl);
    run_demo.addPassthruArgs();
    run_demo.setCwd(b.path("."));
    b.step("run", "Build (release) and start the demo relay on 127.0.0.1:8080 beside the mock upstream").dependOn(&run_demo.step);

    // `zig build test`: unit tests (debug, with UBSan traps) then integration
    // tests against the release binaries, through one runner that prints the
    // total last.
    const run_tests = b.addSystemCommand(&.{ ".venv/bin/python", "tests/run_tests.py" });
    run_tests.addPrefixedArtifactArg("--ringway=", ringway);
    run_tests.addPrefixedArtifactArg("--mock=", mock);
    run_tests.addPrefixedArtifactArg("--ringctl=", ringctl);
    for (unit_tests) |name| {
        const module = b.createModule(.{ .target = target, .optimize = .debug, .link_libc = true });
        // The text module's test proves it needs nothing but libc.
        addParts(b, module, if (std.mem.eql(u8, name, "text")) base_parts else core_parts);
        module.addCSourceFiles(.{
            .files = &.{b.fmt("tests/unit/test_{s}.c", .{name})},
            .flags = &c_flags,
        });
        const exe = b.addExecutable(.{ .name = b.fmt("test_{s}", .{name}), .root_module = module });
        run_tests.addPrefixedArtifactArg("--unit=", exe);
    }
    run_tests.addPassthruArgs();
    run_tests.has_side_effects = true;
    run_tests.setCwd(b.path("."));
    b.step("test", "Run the unit and integration tests").dependOn(&run_tests.step);

    // ---- Fuzz harnesses (see tests/fuzz/README.md) --------------------------
    // `zig build test` also runs every harness without libFuzzer: replay.c
    // feeds it its seed corpus and a few thousand seeded mutations (debug,
    // like the unit tests). `zig build fuzz -- [harness] [seconds]` is the
    // real coverage-guided campaign with clang's libFuzzer and sanitizers.
    const fuzz_harnesses = [_][]const u8{ "http_request", "http_response", "http_chunked", "json", "sse", "config" };
    for (fuzz_harnesses) |name| {
        const module = b.createModule(.{ .target = target, .optimize = .debug, .link_libc = true });
        addParts(b, module, fuzz_parts);
        module.addCSourceFiles(.{
            .files = &.{ b.fmt("tests/fuzz/fuzz_{s}.c", .{name}), "tests/fuzz/replay.c" },
            .flags = &c_flags,
        });
        const exe = b.addExecutable(.{ .name = b.fmt("fuzz_{s}", .{name}), .root_module = module });
        run_tests.addArtifactArg2(exe, .{ .prefix = "--unit=", .suffix = b.fmt("::tests/fuzz/corpus/{s}", .{name}) });
    }
    const run_fuzz = b.addSystemCommand(&.{ "bash", "tests/fuzz/run.sh" });
    run_fuzz.addPassthruArgs();
    run_fuzz.has_side_effects = true;
    run_fuzz.setCwd(b.path("."));
    b.step("fuzz", "Fuzz the parsers with libFuzzer (`-- [harness] [seconds]`, default all, 30 s each)").dependOn(&run_fuzz.step);

    // ---- `zig build bench` (see bench/README.md) ----------------------------
    // Builds our SSE load generator, a copy of the relay for a CPU model
    // valgrind can decode (no AVX-512) and an io_uring shim that lets the
    // multi-threaded relay run under valgrind (callgrind scenario), none
    // installed, then runs the harness: ringway vs nginx vs direct.
    // `zig build bench -- --full` for the full run, `-- --scenario N` for one.
    const sseload_module = b.createModule(.{ .target = target, .optimize = optimize, .link_libc = true });
    sseload_module.addIncludePath(b.path("include"));
    sseload_module.addCSourceFiles(.{ .files = &.{ "bench/sseload.c", "src/util/assert.c" }, .flags = &c_flags });
    sseload_module.linkSystemLibrary("wolfssl", .{});
    const sseload = b.addExecutable(.{ .name = "sseload", .root_module = sseload_module });
    var valgrind_query = target.query;
    if (target.result.cpu.arch == .x86_64) valgrind_query.cpu_model = .{ .explicit = &std.Target.x86.cpu.x86_64_v3 };
    const valgrind_module = b.createModule(.{ .target = b.resolveTargetQuery(valgrind_query), .optimize = optimize, .link_libc = true });
    addParts(b, valgrind_module, core_parts);
    valgrind_module.addCSourceFiles(.{ .files = &.{"src/main.c"}, .flags = &c_flags });
    const ringway_valgrind = b.addExecutable(.{ .name = "ringway-valgrind", .root_module = valgrind_module });
    const shim_module = b.createModule(.{ .target = target, .optimize = optimize, .link_libc = true });
    shim_module.addCSourceFiles(.{ .files = &.{"bench/uring-valgrind-shim.c"}, .flags = &c_flags });
    shim_module.linkSystemLibrary("uring", .{});
    const uring_shim = b.addLibrary(.{ .name = "uring-valgrind-shim", .linkage = .dynamic, .root_module = shim_module });
    const run_bench = b.addSystemCommand(&.{ ".venv/bin/python", "bench/run.py" });
    run_bench.addPrefixedArtifactArg("--ringway=", ringway);
    run_bench.addPrefixedArtifactArg("--ringway-valgrind=", ringway_valgrind);
    run_bench.addPrefixedArtifactArg("--mock=", mock);
    run_bench.addPrefixedArtifactArg("--sseload=", sseload);
    run_bench.addPrefixedArtifactArg("--uring-shim=", uring_shim);
    run_bench.addPassthruArgs();
    run_bench.has_side_effects = true;
    run_bench.setCwd(b.path("."));
    b.step("bench", "Benchmark ringway against nginx and direct (quick; `-- --full`, `-- --scenario N`)").dependOn(&run_bench.step);
}
