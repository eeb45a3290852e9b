/* Ringway's configuration: loading, validating and looking up conf/ringway.conf.
 *
 * The format, in full (conf/ringway.conf documents every key):
 *   - One item per line; lines end in "\n" or "\r\n"; at most
 *     CONFIG_LINE_BYTES_MAX - 1 bytes per line; no NUL bytes.
 *   - "# ..." is a comment when '#' starts the line (after optional
 *     whitespace) or follows whitespace; elsewhere '#' is data ("a#b").
 *   - "[server]", "[limits]", "[timeouts]", "[relay]": at most once each.
 *     "[upstream NAME]" (up to 64) and "[model NAME]" (up to 256): NAME unique
 *     per kind. Upstream names: 1..63 of A-Z a-z 0-9 _ . -. Model names:
 *     1..127 printable ASCII bytes without space, '"' or '\' (so they go into
 *     JSON unescaped).
 *   - "key = value". Keys are lowercase; an unknown key, a key set twice in
 *     one section, a missing value or a bad one is an error.
 *   - Strings run to the end of the line (or the comment) and are trimmed;
 *     "double quotes" keep surrounding spaces and '#'. There are no escapes:
 *     a quoted value cannot contain '"'.
 *   - Integers are unsigned decimal. Keys ending in _bytes or _bytes_max also
 *     take a binary suffix: k or KiB = 1024, m or MiB = 1024^2, g or GiB =
 *     1024^3 ("16k", "10MiB"); "KB"/"MB" are refused as ambiguous. Keys
 *     ending in _ms are milliseconds, plain integers.
 *   - Booleans are exactly true or false.
 *   - Relative paths (data_dir, ca_file) are relative to the working
 *     directory of the process, not to the configuration file.
 *
 * Errors are one line, "SOURCE:LINE: problem", written NUL-terminated (and
 * truncated if need be) into the caller's buffer. Problems with the file as
 * a whole (no model at all) are "SOURCE: problem". An api_key value is never
 * echoed in an error. */
#ifndef RINGWAY_CONFIG_H
#define RINGWAY_CONFIG_H

#include "ringway/config-t.h"

/* Resets every field to its documented default: listen 127.0.0.1:8080,
 * threads 0, data_dir ./data, admin_listen 127.0.0.1:8081, the [limits] and
 * [timeouts] defaults, drain on client disconnect, no upstreams, no models. */
void config_set_defaults(config_t *config);

/* Parses and validates a whole configuration text of `length` bytes (need
 * not be NUL-terminated). `source_name` is used in error messages and kept in
 * config->source_path. Returns 0 with `config` filled, or -1 with the error
 * in `error` (error_size > 0) and `config` left unspecified. Reads
 * environment variables named by api_key_env; no other side effect. */
int config_parse(config_t *config, const char *text, size_t length, const char *source_name,
                 char *error, size_t error_size);

/* Reads the file at `path` and parses it as config_parse does, with `path`
 * as the source name. A file that cannot be opened or read is
 * "PATH: cannot read: <strerror>". */
int config_load(config_t *config, const char *path, char *error, size_t error_size);

/* The model whose public name is exactly these bytes, or NULL. O(log n),
 * no allocation; safe to call from any thread on a config that is no longer
 * being written. */
const config_model_t *config_find_model(const config_t *config, const uint8_t *name,
                                        size_t name_length);

/* The incremental interface under config_parse and config_load, for callers
 * that receive the text in pieces. begin: like config_parse's preamble
 * (defaults, source name). feed: any number of bytes, any split; returns 0,
 * or -1 once an error has been written (later feeds keep returning -1).
 * finish: ends the last line, validates the whole, builds the model index;
 * returns 0 or -1. The parser must outlive these calls and is then
 * discarded. */
void config_parser_begin(config_parser_t *parser, config_t *config, const char *source_name,
                         char *error, size_t error_size);
int config_parser_feed(config_parser_t *parser, const char *bytes, size_t length);
int config_parser_finish(config_parser_t *parser);

#endif
