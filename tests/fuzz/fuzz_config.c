/* Fuzzes the configuration parser (src/config/config.c) with whole files.
 *
 * Properties checked, beyond "no crash, no sanitizer report":
 *   - config_parse and the incremental interface fed in two pieces (split
 *     chosen from the input), one byte at a time and in random pieces give
 *     the same result: the same return value, the same error text, and on
 *     success the same config_t byte for byte;
 *   - an error is one line that starts with the source name and a colon;
 *     with a small error buffer it is the same text cut short, always
 *     NUL-terminated;
 *   - a secret never shows in an error: not the value of the environment
 *     variable that api_key_env names (RINGWAY_FUZZ_KEY, set here), and not
 *     an api_key value: rotating the letters and digits of every api_key
 *     value leaves the result and the error text exactly as they were;
 *   - an accepted configuration keeps its documented invariants: at least one
 *     upstream and one model within their maxima; every string NUL-terminated
 *     inside its field; names unique and made of the documented characters;
 *     every model's upstream exists; models_by_name is a permutation sorted
 *     by name; config_find_model finds every model and nothing else; ports
 *     are set; upstream timeouts are resolved (never 0); base_path is "" or
 *     "/..." without a trailing '/'; plain http only to a loopback host. */
#include "fuzz.h"

#include "ringway/config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <strings.h>

enum { FUZZ_INPUT_BYTES_MAX = 65536, FUZZ_ERROR_BYTES = 1024 };

static const char fuzz_source_name[] = "fuzz.conf";
static const char fuzz_env_name[] = "RINGWAY_FUZZ_KEY";
static const char fuzz_env_secret[] = "fuzz-secret-from-the-environment";

typedef struct parse_outcome {
    int result;
    char error[FUZZ_ERROR_BYTES];
} parse_outcome_t;

static config_t config_whole;
static config_t config_other;
static config_parser_t parser;

typedef enum piece_mode {
    PIECES_TWO,
    PIECES_BYTES,
    PIECES_RANDOM
} piece_mode_t;

static void parse_in_pieces(const uint8_t *text, size_t length, piece_mode_t mode, size_t split,
                            fuzz_random_t *random, config_t *config, parse_outcome_t *outcome) {
    config_parser_begin(&parser, config, fuzz_source_name, outcome->error, sizeof outcome->error);
    size_t position = 0;
    int fed = 0;
    while (position < length) {
        size_t piece_end = length;
        if (mode == PIECES_TWO) {
            piece_end = position < split ? split : length;
        } else if (mode == PIECES_BYTES) {
            piece_end = position + 1;
        } else {
            piece_end = position + 1 + fuzz_random_upto(random, RW_MIN(length - position - 1, (size_t)200));
        }
        int status = config_parser_feed(&parser, (const char *)text + position, piece_end - position);
        FUZZ_CHECK(status == 0 || status == -1);
        FUZZ_CHECK(fed == 0 || status == -1); /* once failed, always failed */
        fed = status;
        position = piece_end;
    }
    outcome->result = config_parser_finish(&parser);
    FUZZ_CHECK(fed == 0 || outcome->result == -1);
}

static bool terminated_within(const char *field, size_t capacity) {
    return memchr(field, '\0', capacity) != NULL;
}

static bool is_upstream_name_char(char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '.' || c == '-';
}

static bool is_model_name_char(char c) {
    return c > ' ' && c < 0x7f && c != '"' && c != '\\';
}

/* Bytewise order, shorter first on a common prefix. */
static int compare_names(const char *a, const char *b) {
    size_t a_length = strlen(a);
    size_t b_length = strlen(b);
    int order = memcmp(a, b, RW_MIN(a_length, b_length));
    if (order != 0) {
        return order;
    }
    return a_length < b_length ? -1 : a_length > b_length ? 1 : 0;
}

/* localhost, 127.0.0.0/8, ::1 or ::ffff:127.x.y.z, decided by inet_pton
 * rather than by the parser's own address code. */
static bool is_loopback(const char *host) {
    if (strcasecmp(host, "localhost") == 0) {
        return true;
    }
    struct in_addr ipv4;
    if (inet_pton(AF_INET, host, &ipv4) == 1) {
        return (ntohl(ipv4.s_addr) >> 24) == 127;
    }
    struct in6_addr ipv6;
    if (inet_pton(AF_INET6, host, &ipv6) == 1) {
        return IN6_IS_ADDR_LOOPBACK(&ipv6) || (IN6_IS_ADDR_V4MAPPED(&ipv6) && ipv6.s6_addr[12] == 127);
    }
    return false;
}

static void check_accepted(const config_t *config) {
    FUZZ_CHECK(strcmp(config->source_path, fuzz_source_name) == 0);
    FUZZ_CHECK(config->upstream_count >= 1 && config->upstream_count <= CONFIG_UPSTREAMS_MAX);
    FUZZ_CHECK(config->model_count >= 1 && config->model_count <= CONFIG_MODELS_MAX);
    FUZZ_CHECK(config->listen_port >= 1 && config->admin_listen_port >= 1);
    FUZZ_CHECK(terminated_within(config->listen_host, sizeof config->listen_host));
    FUZZ_CHECK(terminated_within(config->admin_listen_host, sizeof config->admin_listen_host));
    FUZZ_CHECK(terminated_within(config->data_dir, sizeof config->data_dir));
    FUZZ_CHECK(config->client_disconnect == CONFIG_DISCONNECT_DRAIN ||
               config->client_disconnect == CONFIG_DISCONNECT_CANCEL);

    for (uint32_t index = 0; index < config->upstream_count; index++) {
        const config_upstream_t *upstream = &config->upstreams[index];
        FUZZ_CHECK(terminated_within(upstream->name, sizeof upstream->name));
        FUZZ_CHECK(terminated_within(upstream->base_url, sizeof upstream->base_url));
        FUZZ_CHECK(terminated_within(upstream->host, sizeof upstream->host));
        FUZZ_CHECK(terminated_within(upstream->base_path, sizeof upstream->base_path));
        FUZZ_CHECK(upstream->api_key_count <= CONFIG_UPSTREAM_KEYS_MAX);
        FUZZ_CHECK(upstream->has_api_key == (upstream->api_key_count > 0));
        for (uint32_t key = 0; key < upstream->api_key_count; key++) {
            FUZZ_CHECK(terminated_within(upstream->api_keys[key], sizeof upstream->api_keys[key]));
            FUZZ_CHECK(upstream->api_keys[key][0] != '\0');
        }
        FUZZ_CHECK(terminated_within(upstream->ca_file, sizeof upstream->ca_file));
        FUZZ_CHECK(terminated_within(upstream->sni, sizeof upstream->sni));
        size_t name_length = strlen(upstream->name);
        FUZZ_CHECK(name_length >= 1);
        for (size_t at = 0; at < name_length; at++) {
            FUZZ_CHECK(is_upstream_name_char(upstream->name[at]));
        }
        for (uint32_t other = 0; other < index; other++) {
            FUZZ_CHECK(strcmp(config->upstreams[other].name, upstream->name) != 0);
        }
        FUZZ_CHECK(upstream->host[0] != '\0' && upstream->port >= 1);
        size_t path_length = strlen(upstream->base_path);
        FUZZ_CHECK(path_length == 0 ||
                   (upstream->base_path[0] == '/' && upstream->base_path[path_length - 1] != '/'));
        FUZZ_CHECK(upstream->connect_ms > 0 && upstream->first_byte_ms > 0 && upstream->idle_ms > 0);
        if (!upstream->tls) {
            FUZZ_CHECK(is_loopback(upstream->host));
        }
    }

    bool seen[CONFIG_MODELS_MAX] = {false};
    for (uint32_t index = 0; index < config->model_count; index++) {
        const config_model_t *model = &config->models[index];
        FUZZ_CHECK(terminated_within(model->name, sizeof model->name));
        FUZZ_CHECK(terminated_within(model->owned_by, sizeof model->owned_by));
        size_t name_length = strlen(model->name);
        FUZZ_CHECK(name_length >= 1);
        for (size_t at = 0; at < name_length; at++) {
            FUZZ_CHECK(is_model_name_char(model->name[at]));
        }
        FUZZ_CHECK(model->route_count >= 1 && model->route_count <= CONFIG_ROUTES_MAX);
        for (uint32_t at = 0; at < model->route_count; at++) {
            const config_route_t *route = &model->routes[at];
            FUZZ_CHECK(route->upstream_index < config->upstream_count);
            FUZZ_CHECK(strcmp(config->upstreams[route->upstream_index].name, route->upstream_name) == 0);
            FUZZ_CHECK(terminated_within(route->upstream_model, sizeof route->upstream_model));
            FUZZ_CHECK(route->upstream_model[0] != '\0');
            FUZZ_CHECK(route->weight >= 1 && route->weight <= CONFIG_ROUTE_WEIGHT_MAX);
            FUZZ_CHECK(route->priority <= CONFIG_ROUTE_PRIORITY_MAX);
        }
        FUZZ_CHECK(config_find_model(config, (const uint8_t *)model->name, name_length) == model);
        /* A name one byte longer is another model or none. */
        char longer[CONFIG_MODEL_NAME_BYTES + 1];
        memcpy(longer, model->name, name_length);
        longer[name_length] = '~';
        const config_model_t *found = config_find_model(config, (const uint8_t *)longer, name_length + 1);
        FUZZ_CHECK(found == NULL || (strlen(found->name) == name_length + 1 &&
                                     memcmp(found->name, longer, name_length + 1) == 0));

        uint16_t position = config->models_by_name[index];
        FUZZ_CHECK(position < config->model_count && !seen[position]);
        seen[position] = true;
        if (index > 0) {
            FUZZ_CHECK(compare_names(config->models[config->models_by_name[index - 1]].name,
                                     config->models[position].name) < 0);
        }
    }
    FUZZ_CHECK(config_find_model(config, (const uint8_t *)"", 0) == NULL);
}

/* Copies text to masked with the letters and digits of every "api_key =
 * VALUE" value rotated (letters stay letters of the same case, digits stay
 * digits), so validity cannot change but any echo of a value would. Returns
 * whether any byte changed. */
static bool mask_api_keys(const uint8_t *text, size_t length, uint8_t *masked) {
    static const char key[] = "api_key";
    memcpy(masked, text, length);
    bool changed = false;
    size_t line_start = 0;
    while (line_start < length) {
        size_t at = line_start;
        while (at < length && (text[at] == ' ' || text[at] == '\t')) at++;
        if (length - at >= sizeof key - 1 && memcmp(text + at, key, sizeof key - 1) == 0) {
            at += sizeof key - 1;
            while (at < length && (text[at] == ' ' || text[at] == '\t')) at++;
            if (at < length && text[at] == '=') {
                for (at++; at < length && text[at] != '\n' && text[at] != '\r'; at++) {
                    uint8_t byte = text[at];
                    if (byte >= 'a' && byte <= 'z') {
                        masked[at] = (uint8_t)('a' + (byte - 'a' + 7) % 26);
                    } else if (byte >= 'A' && byte <= 'Z') {
                        masked[at] = (uint8_t)('A' + (byte - 'A' + 7) % 26);
                    } else if (byte >= '0' && byte <= '9') {
                        masked[at] = (uint8_t)('0' + (byte - '0' + 3) % 10);
                    }
                    changed = changed || masked[at] != byte;
                }
            }
        }
        while (line_start < length && text[line_start] != '\n') line_start++;
        line_start++;
    }
    return changed;
}

static void check_error(const char *error, const uint8_t *text, size_t length) {
    size_t error_length = strlen(error);
    FUZZ_CHECK(error_length > sizeof fuzz_source_name);
    FUZZ_CHECK(memcmp(error, fuzz_source_name, sizeof fuzz_source_name - 1) == 0);
    FUZZ_CHECK(error[sizeof fuzz_source_name - 1] == ':');
    FUZZ_CHECK(strchr(error, '\n') == NULL);
    /* (libFuzzer learns the secret from this very comparison and may put it
     * in the text, from where an error may quote it.) */
    if (!fuzz_contains(text, length, fuzz_env_secret)) {
        FUZZ_CHECK(strstr(error, fuzz_env_secret) == NULL);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > FUZZ_INPUT_BYTES_MAX) {
        return 0;
    }
    setenv(fuzz_env_name, fuzz_env_secret, 1);
    fuzz_random_t random = {fuzz_hash(data, size)};

    static parse_outcome_t whole, other;
    whole.result = config_parse(&config_whole, (const char *)data, size, fuzz_source_name,
                                whole.error, sizeof whole.error);
    FUZZ_CHECK(whole.result == 0 || whole.result == -1);
    if (whole.result == 0) {
        FUZZ_CHECK(whole.error[0] == '\0');
        check_accepted(&config_whole);
    } else {
        check_error(whole.error, data, size);
    }

    static const piece_mode_t modes[] = {PIECES_TWO, PIECES_BYTES, PIECES_RANDOM};
    for (size_t mode = 0; mode < RW_ARRAY_LENGTH(modes); mode++) {
        size_t split = fuzz_split_point(data, size, &random);
        parse_in_pieces(data, size, modes[mode], split, &random, &config_other, &other);
        FUZZ_CHECK(other.result == whole.result);
        FUZZ_CHECK(strcmp(other.error, whole.error) == 0);
        if (whole.result == 0) {
            FUZZ_CHECK(memcmp(&config_other, &config_whole, sizeof config_whole) == 0);
        }
    }

    /* Changing api_key values changes no error: none is ever echoed. */
    static uint8_t masked[FUZZ_INPUT_BYTES_MAX];
    if (mask_api_keys(data, size, masked)) {
        other.result = config_parse(&config_other, (const char *)masked, size, fuzz_source_name,
                                    other.error, sizeof other.error);
        FUZZ_CHECK(other.result == whole.result);
        FUZZ_CHECK(strcmp(other.error, whole.error) == 0);
    }

    if (whole.result != 0) {
        /* A small buffer gets the same error cut short. */
        char small[65];
        size_t small_size = 1 + fuzz_random_upto(&random, sizeof small - 2);
        memset(small, 'x', sizeof small);
        FUZZ_CHECK(config_parse(&config_other, (const char *)data, size, fuzz_source_name, small,
                                small_size) == -1);
        size_t expected = RW_MIN(strlen(whole.error), small_size - 1);
        FUZZ_CHECK(strlen(small) == expected && memcmp(small, whole.error, expected) == 0);
        FUZZ_CHECK(small[small_size] == 'x');
    }
    return 0;
}
