//! Ringway's only build description. `zig build` compiles the relay
//! (`ringway`), the mock upstream (`ringway-mock`) and the unit tests; `run`
//! starts the demo relay beside the mock; `test` runs every unit and
//! integration test and ends with one "N passed, N failed" line.
const std = @import("std");

/// Every C source of the relay core, by module. Binaries link all of them;
/// each module's directory owns one concern (see README "Layout").
const core_sources = [_][]const u8{
    "src/util/assert.c",
    "src/http/request.c",
    "src/http/response.c",
    "src/http/chunked.c",
    "src/http/writer.c",
    "src/json/json.c",
    "src/sse/sse.c",
    "src/sse/usage.c",
    "src/tls/tls.c",
    "src/config/config.c",
    "src/loop/loop.c",
    "src/router/router.c",
    "src/upstream/upstream.c",
    "src/server/server.c",
    "src/relay/relay.c",
    "src/relay/billing.c",
    "src/relay/accounts.c",
    "src/mock/mock.c",
    "src/channel/channel.c",
    "src/account/account.c",
    "src/auth/auth.c",
    "src/auth/jwt.c",
    "src/auth/password.c",
    "src/ledger/ledger.c",
    "src/store/store.c",
    "src/store/codec.c",
    "src/store/thread.c",
    "src/admin/admin.c",
    "src/admin/control.c",
    "src/admin/jobs.c",
    "src/admin/accounts.c",
    "src/admin/text.c",
};

/// One executable per file; each prints "N passed, N failed" last.
const unit_tests = [_][]const u8{
    "http",
    "json",
    "sse",
    "tls",
    "config",
    "channel",
    "account",
    "auth",
    "ledger",
    "store",
    "admin",
    "loop",
    "server",
    "upstream",
    "router",
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

const system_libraries = [_][]const u8{ "uring", "wolfssl", "rocksdb", "argon2", "pthread" };

fn addCore(b: *std.Build, module: *std.Build.Module) void {
    module.addIncludePath(b.path("include"));
    module.addCSourceFiles(.{ .files = &core_sources, .flags = &c_flags });
    for (system_libraries) |name| module.linkSystemLibrary(name, .{});
}

fn addProgram(
    b: *std.Build,
    name: []const u8,
    main_source: []const u8,
    target: std.Build.ResolvedTarget,
    optimize: std.builtin.Optimize,
) *std.Build.Step.Compile {
    const module = b.createModule(.{ .target = target, .optimize = optimize, .link_libc = true });
    addCore(b, module);
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

    const ringway = addProgram(b, "ringway", "src/main.c", target, optimize);
    const mock = addProgram(b, "ringway-mock", "src/mock/main.c", target, optimize);
    // ringctl, the ops tool (tools/ringctl): the admin API's client.
    const ringctl = addProgram(b, "ringctl", "tools/ringctl/ringctl.c", target, optimize);
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
        addCore(b, module);
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
        addCore(b, module);
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
    addCore(b, valgrind_module);
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
