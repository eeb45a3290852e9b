/* Replays a fuzz harness without libFuzzer, so its properties run in every
 * `tools/zig build test`: each file in the given directories (or the given
 * files) goes through LLVMFuzzerTestOneInput, then a fixed number of seeded
 * pseudo-random mutations of it (bit flips, byte changes, inserted framing
 * tokens, deleted or duplicated ranges, splices with the other files).
 *
 *   fuzz_X [--mutations=N] [--seed=N] PATH...
 *
 * Each file with its mutations is one test, run in a child process so that a
 * broken property (an abort) or a crash counts as one failure and the others
 * still run. The input that failed is written to
 * .zig-cache/fuzz/replay-failures/ and shown in hex. The last line of output
 * is "N passed, N failed", as for the unit tests. The same arguments always
 * replay the same inputs. */
#include "fuzz.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

enum {
    REPLAY_FILES_MAX = 256,
    REPLAY_FILE_BYTES_MAX = 1 << 20,
    REPLAY_MUTATIONS_DEFAULT = 2400,
    REPLAY_MUTATION_STEPS_MAX = 4
};

#define REPLAY_FAILURE_DIRECTORY ".zig-cache/fuzz/replay-failures"

typedef struct replay_file {
    char path[1024];
    uint8_t *bytes;
    size_t length;
} replay_file_t;

static replay_file_t replay_files[REPLAY_FILES_MAX];
static size_t replay_file_count;

/* What the child is running, for the crash handler. */
static const uint8_t *replay_current_bytes;
static size_t replay_current_length;
static char replay_failure_path[1200];

/* Tokens that matter to the parsers under test; inserting them reaches
 * framing states a byte flip rarely does. */
static const char *const replay_tokens[] = {
    "\r\n", "\n", "\r", "\r\n\r\n", "\n\n", ":", ": ", " ", "\t", "0", "1", "9", "a", "F", ";",
    "{", "}", "[", "]", "\"", ",", "\\", "\\u", "\\ud83d\\ude00", "null", "true", "false", "-",
    ".", "e", "1e2", "data: ", "data:", "event: ", "id: ", "retry: ", ": keep-alive", "[DONE]",
    "\xef\xbb\xbf", "\"usage\":", "\"choices\":[]", "\"prompt_tokens\":", "\"model\":",
    "\"messages\":[", "\"stream\":true", "Content-Length: ", "Transfer-Encoding: chunked",
    "Host: a", "Connection: close", "HTTP/1.1", "HTTP/1.0", "=", "#", "[", "[model m]",
    "[upstream u]", "upstream = u", "base_url = http://127.0.0.1:1", "k", "MiB", "\"",
    "\x80", "\xc3\xa9", "\xff", "\x00",
};

static void replay_write_all(int fd, const void *bytes, size_t length) {
    const uint8_t *at = bytes;
    while (length > 0) {
        ssize_t written = write(fd, at, length);
        if (written <= 0) {
            return;
        }
        at += written;
        length -= (size_t)written;
    }
}

static void replay_write_text(int fd, const char *text) {
    replay_write_all(fd, text, strlen(text));
}

/* Async-signal-safe: saves the failing input and prints it in hex. */
static void replay_crash_handler(int signal_number) {
    int fd = open(replay_failure_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
        replay_write_all(fd, replay_current_bytes, replay_current_length);
        close(fd);
    }
    replay_write_text(2, "replay: failing input saved to ");
    replay_write_text(2, replay_failure_path);
    replay_write_text(2, "\nreplay: input (hex, first 512 bytes): ");
    static const char hex[] = "0123456789abcdef";
    size_t shown = replay_current_length < 512 ? replay_current_length : 512;
    for (size_t index = 0; index < shown; index++) {
        char pair[2] = {hex[replay_current_bytes[index] >> 4], hex[replay_current_bytes[index] & 15]};
        replay_write_all(2, pair, 2);
    }
    replay_write_text(2, "\n");
    signal(signal_number, SIG_DFL);
    raise(signal_number);
}

static void replay_install_crash_handlers(void) {
    const int signals[] = {SIGABRT, SIGSEGV, SIGILL, SIGBUS, SIGFPE, SIGTRAP};
    for (size_t index = 0; index < RW_ARRAY_LENGTH(signals); index++) {
        signal(signals[index], replay_crash_handler);
    }
}

static void replay_run(const uint8_t *bytes, size_t length) {
    replay_current_bytes = bytes;
    replay_current_length = length;
    /* A copy of exactly length bytes, so reading past the end is caught by
     * ASan when it is on, and so the harness cannot change the corpus. */
    uint8_t *copy = malloc(length == 0 ? 1 : length);
    RW_ASSERT(copy != NULL);
    memcpy(copy, bytes, length);
    LLVMFuzzerTestOneInput(copy, length);
    free(copy);
}

static void replay_add_file(const char *path) {
    if (replay_file_count == REPLAY_FILES_MAX) {
        fprintf(stderr, "replay: more than %d inputs; ignoring %s\n", REPLAY_FILES_MAX, path);
        return;
    }
    FILE *file = fopen(path, "rb");
    if (file == NULL) {
        fprintf(stderr, "replay: cannot read %s: %s\n", path, strerror(errno));
        return;
    }
    replay_file_t *entry = &replay_files[replay_file_count];
    uint8_t *chunk = malloc(REPLAY_FILE_BYTES_MAX);
    RW_ASSERT(chunk != NULL);
    entry->length = fread(chunk, 1, REPLAY_FILE_BYTES_MAX, file);
    fclose(file);
    entry->bytes = realloc(chunk, entry->length == 0 ? 1 : entry->length);
    RW_ASSERT(entry->bytes != NULL);
    snprintf(entry->path, sizeof entry->path, "%s", path);
    replay_file_count++;
}

static int replay_compare_names(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Adds every regular file of directory, in name order so runs repeat. */
static void replay_add_directory(const char *directory) {
    DIR *listing = opendir(directory);
    if (listing == NULL) {
        fprintf(stderr, "replay: cannot open %s: %s\n", directory, strerror(errno));
        return;
    }
    static char names[REPLAY_FILES_MAX][256];
    const char *sorted[REPLAY_FILES_MAX];
    size_t count = 0;
    struct dirent *item;
    while ((item = readdir(listing)) != NULL && count < REPLAY_FILES_MAX) {
        if (item->d_name[0] == '.') {
            continue;
        }
        snprintf(names[count], sizeof names[count], "%s", item->d_name);
        sorted[count] = names[count];
        count++;
    }
    closedir(listing);
    qsort(sorted, count, sizeof sorted[0], replay_compare_names);
    for (size_t index = 0; index < count; index++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", directory, sorted[index]);
        struct stat status;
        if (stat(path, &status) == 0 && S_ISREG(status.st_mode)) {
            replay_add_file(path);
        }
    }
}

/* One mutation step on buffer[0, *length), capacity bytes available. */
static void replay_mutate_once(uint8_t *buffer, size_t *length, size_t capacity,
                               fuzz_random_t *random) {
    size_t size = *length;
    switch (fuzz_random_upto(random, 7)) {
    case 0: /* flip one bit */
        if (size > 0) {
            buffer[fuzz_random_upto(random, size - 1)] ^= (uint8_t)(1u << fuzz_random_upto(random, 7));
        }
        break;
    case 1: /* replace one byte */
        if (size > 0) {
            buffer[fuzz_random_upto(random, size - 1)] = (uint8_t)fuzz_random_next(random);
        }
        break;
    case 2: /* delete a range */
        if (size > 0) {
            size_t start = fuzz_random_upto(random, size - 1);
            size_t count = 1 + fuzz_random_upto(random, RW_MIN(size - start - 1, (size_t)15));
            memmove(buffer + start, buffer + start + count, size - start - count);
            *length = size - count;
        }
        break;
    case 3: /* duplicate a range */
        if (size > 0) {
            size_t start = fuzz_random_upto(random, size - 1);
            size_t count = 1 + fuzz_random_upto(random, RW_MIN(size - start - 1, (size_t)63));
            size_t at = fuzz_random_upto(random, size);
            if (size + count <= capacity) {
                uint8_t piece[64];
                memcpy(piece, buffer + start, count);
                memmove(buffer + at + count, buffer + at, size - at);
                memcpy(buffer + at, piece, count);
                *length = size + count;
            }
        }
        break;
    case 4:
    case 5: { /* insert a token */
        const char *token = replay_tokens[fuzz_random_upto(random, RW_ARRAY_LENGTH(replay_tokens) - 1)];
        size_t count = token[0] == '\0' ? 1 : strlen(token); /* "\x00" inserts one NUL */
        size_t at = fuzz_random_upto(random, size);
        if (size + count <= capacity) {
            memmove(buffer + at + count, buffer + at, size - at);
            memcpy(buffer + at, token, count);
            *length = size + count;
        }
        break;
    }
    case 6: /* splice in a range of another input */
        if (replay_file_count > 0) {
            const replay_file_t *other = &replay_files[fuzz_random_upto(random, replay_file_count - 1)];
            if (other->length > 0) {
                size_t start = fuzz_random_upto(random, other->length - 1);
                size_t count = 1 + fuzz_random_upto(random, RW_MIN(other->length - start - 1, (size_t)255));
                size_t at = fuzz_random_upto(random, size);
                if (size + count <= capacity) {
                    memmove(buffer + at + count, buffer + at, size - at);
                    memcpy(buffer + at, other->bytes + start, count);
                    *length = size + count;
                }
            }
        }
        break;
    default: /* truncate */
        *length = fuzz_random_upto(random, size);
        break;
    }
}

/* Runs one input and its mutations; returns only if every property held. */
static void replay_test_file(size_t file_index, size_t mutations, uint64_t seed) {
    const replay_file_t *file = &replay_files[file_index];
    replay_run(file->bytes, file->length);
    size_t capacity = file->length + 4096;
    uint8_t *buffer = malloc(capacity);
    RW_ASSERT(buffer != NULL);
    fuzz_random_t random = {seed ^ (0x9e3779b97f4a7c15u * (file_index + 1))};
    for (size_t round = 0; round < mutations; round++) {
        size_t length = file->length;
        memcpy(buffer, file->bytes, length);
        size_t steps = 1 + fuzz_random_upto(&random, REPLAY_MUTATION_STEPS_MAX - 1);
        for (size_t step = 0; step < steps; step++) {
            replay_mutate_once(buffer, &length, capacity, &random);
        }
        replay_run(buffer, length);
    }
    free(buffer);
}

static const char *replay_base_name(const char *path) {
    const char *slash = strrchr(path, '/');
    return slash == NULL ? path : slash + 1;
}

int main(int argc, char **argv) {
    size_t mutations_total = REPLAY_MUTATIONS_DEFAULT;
    uint64_t seed = 0x52696e67776179u; /* "Ringway" */
    for (int index = 1; index < argc; index++) {
        const char *argument = argv[index];
        if (strncmp(argument, "--mutations=", 12) == 0) {
            mutations_total = strtoull(argument + 12, NULL, 10);
        } else if (strncmp(argument, "--seed=", 7) == 0) {
            seed = strtoull(argument + 7, NULL, 0);
        } else {
            struct stat status;
            if (stat(argument, &status) == 0 && S_ISDIR(status.st_mode)) {
                replay_add_directory(argument);
            } else {
                replay_add_file(argument);
            }
        }
    }
    if (replay_file_count == 0) {
        fprintf(stderr, "usage: %s [--mutations=N] [--seed=N] DIRECTORY_OR_FILE...\n", argv[0]);
        printf("0 passed, 1 failed\n");
        return 1;
    }
    mkdir(".zig-cache", 0755);
    mkdir(".zig-cache/fuzz", 0755);
    mkdir(REPLAY_FAILURE_DIRECTORY, 0755);
    size_t mutations_per_file = mutations_total / replay_file_count;

    int passed = 0;
    int failed = 0;
    for (size_t index = 0; index < replay_file_count; index++) {
        snprintf(replay_failure_path, sizeof replay_failure_path, "%s/%s-%s",
                 REPLAY_FAILURE_DIRECTORY, replay_base_name(argv[0]),
                 replay_base_name(replay_files[index].path));
        fflush(stdout);
        fflush(stderr);
        pid_t child = fork();
        RW_ASSERT(child >= 0);
        if (child == 0) {
            replay_install_crash_handlers();
            replay_test_file(index, mutations_per_file, seed);
            _exit(0);
        }
        int status = 0;
        while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
        }
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
            passed++;
        } else {
            failed++;
            fprintf(stderr, "FAIL %s (and %zu mutations, seed %#llx)\n", replay_files[index].path,
                    mutations_per_file, (unsigned long long)seed);
        }
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
