/* Unit tests for src/router/router.c, on configurations parsed by the real
 * config parser: model lookup (exact bytes only: no prefix, no case
 * folding; escaped JSON names decoded first; names too long to be a model
 * refused without overflow), routes pointing at the right model and
 * upstream, the GET /v1/models body (byte for byte: valid JSON, every model
 * once, in configuration order, with its owner), and upstream_model_json
 * escaping of names the config parser would never produce (quotes,
 * backslashes, control bytes, the longest name all quotes), which the router
 * must still turn into a valid JSON string that decodes back to the name. */
#include "ringway/config.h"
#include "ringway/json.h"
#include "ringway/router.h"

#include "unit.h"

#include <stdlib.h>
#include <time.h>

static config_t *test_config;
static router_t test_router;

static const char test_configuration[] =
    "[upstream alpha]\n"
    "base_url = http://127.0.0.1:9001/v1\n"
    "[upstream beta]\n"
    "base_url = https://api.example.com/v1\n"
    "[model gpt-4o]\n"
    "upstream = beta\n"
    "upstream_model = gpt-4o-2024-08-06\n"
    "owned_by = openai\n"
    "[model local/small:v1.2]\n"
    "upstream = alpha\n"
    "[model A]\n"
    "upstream = beta\n"
    "upstream_model = a-upstream\n"
    "[model gpt-4o-mini]\n"
    "upstream = alpha\n"
    "owned_by = someone_else\n";

static bool test_parse(const char *text, size_t length) {
    char error[512];
    if (config_parse(test_config, text, length, "router-test.conf", error, sizeof error) != 0) {
        fprintf(stderr, "  config_parse: %s\n", error);
        return false;
    }
    return true;
}

static bool test_build(void) {
    char error[256];
    if (router_init(&test_router, test_config, error, sizeof error) != 0) {
        fprintf(stderr, "  router_init: %s\n", error);
        return false;
    }
    return true;
}

static void test_release(void) {
    free(test_router.models_json);
    test_router.models_json = NULL;
}

static const router_model_t *test_find(const char *quoted) {
    return router_find(&test_router, (const uint8_t *)quoted, strlen(quoted));
}

/* Each configured name, quoted as it appears in a request body, finds its
 * own route: the model's config entry and its upstream. */
static void test_exact_match(void) {
    CHECK(test_parse(test_configuration, sizeof test_configuration - 1));
    CHECK(test_build());
    CHECK(test_router.config == test_config);
    static const struct {
        const char *quoted;
        uint32_t model_index;
        uint32_t upstream_index;
    } cases[] = {
        {"\"gpt-4o\"", 0, 1},
        {"\"local/small:v1.2\"", 1, 0},
        {"\"A\"", 2, 1},
        {"\"gpt-4o-mini\"", 3, 0},
    };
    for (size_t index = 0; index < RW_ARRAY_LENGTH(cases); index++) {
        const router_model_t *model = test_find(cases[index].quoted);
        CHECK(model != NULL);
        if (model == NULL) continue;
        CHECK(model == &test_router.models[cases[index].model_index]);
        CHECK(model->config == &test_config->models[cases[index].model_index]);
        CHECK_EQ_INT(model->index, cases[index].model_index);
        CHECK_EQ_INT(model->route_count, 1);
        CHECK_EQ_INT(model->routes[0].upstream_index, cases[index].upstream_index);
        CHECK_EQ_INT(model->routes[0].weight, 1);
        CHECK_EQ_INT(model->config->routes[0].upstream_index, cases[index].upstream_index);
    }
    test_release();
}

/* Names that are not configured find nothing: a prefix of a model, a model
 * with a suffix, another case, surrounding space, an empty name, and input
 * too short to be a quoted string. */
static void test_unknown_models(void) {
    CHECK(test_parse(test_configuration, sizeof test_configuration - 1));
    CHECK(test_build());
    static const char *const unknown[] = {
        "\"gpt-4\"", "\"gpt-4o-\"", "\"gpt-4o-mini-2\"", "\"GPT-4O\"", "\"a\"", "\" A\"", "\"A \"",
        "\"\"", "\"local/small\"", "\"nothing\"",
    };
    for (size_t index = 0; index < RW_ARRAY_LENGTH(unknown); index++) {
        if (test_find(unknown[index]) != NULL) fprintf(stderr, "  %s was found\n", unknown[index]);
        CHECK(test_find(unknown[index]) == NULL);
    }
    CHECK(router_find(&test_router, (const uint8_t *)"\"", 1) == NULL);
    CHECK(router_find(&test_router, (const uint8_t *)"", 0) == NULL);
    test_release();
}

/* A name written with JSON escapes is decoded before the lookup; an escape
 * that decodes to something else (a NUL, another letter) does not match;
 * an escaped name longer than any model name is refused, not overflowed. */
static void test_escaped_names(void) {
    CHECK(test_parse(test_configuration, sizeof test_configuration - 1));
    CHECK(test_build());
    const router_model_t *route = test_find("\"gpt\\u002d4o\"");
    CHECK(route != NULL && route == &test_router.models[0]);
    route = test_find("\"local\\/small:v1.2\"");
    CHECK(route != NULL && route == &test_router.models[1]);
    route = test_find("\"\\u0041\"");
    CHECK(route != NULL && route == &test_router.models[2]);
    CHECK(test_find("\"gpt-4o\\u0000\"") == NULL);
    CHECK(test_find("\"\\u0061\"") == NULL);
    CHECK(test_find("\"gpt-4o\\n\"") == NULL);
    CHECK(test_find("\"bad\\escape\"") == NULL);
    /* 200 escaped letters: 200 bytes decoded, more than a model name holds. */
    static char long_name[2 + 200 * 6 + 1];
    size_t length = 0;
    long_name[length++] = '"';
    for (int index = 0; index < 200; index++) {
        memcpy(long_name + length, "\\u0061", 6);
        length += 6;
    }
    long_name[length++] = '"';
    long_name[length] = '\0';
    CHECK(router_find(&test_router, (const uint8_t *)long_name, length) == NULL);
    test_release();
}

/* The model list is exactly
 * {"object":"list","data":[{"id":..,"object":"model","created":T,"owned_by":..},...]}
 * with every model once, in the file's order, owned_by defaulting to the
 * upstream's name, and T the time of router_init; it is valid JSON. */
static void test_models_json(void) {
    CHECK(test_parse(test_configuration, sizeof test_configuration - 1));
    long long before = (long long)time(NULL);
    CHECK(test_build());
    long long after = (long long)time(NULL);
    const char *json = test_router.models_json;
    CHECK(json != NULL);
    if (json == NULL) return;
    CHECK_EQ_INT(strlen(json), test_router.models_json_length);
    CHECK_EQ_INT(json_validate((const uint8_t *)json, test_router.models_json_length, NULL), 0);
    const char *created_field = strstr(json, "\"created\":");
    CHECK(created_field != NULL);
    long long created = created_field != NULL ? strtoll(created_field + 10, NULL, 10) : 0;
    CHECK(created >= before && created <= after);
    char expected[1024];
    snprintf(expected, sizeof expected,
             "{\"object\":\"list\",\"data\":["
             "{\"id\":\"gpt-4o\",\"object\":\"model\",\"created\":%lld,\"owned_by\":\"openai\"},"
             "{\"id\":\"local/small:v1.2\",\"object\":\"model\",\"created\":%lld,\"owned_by\":\"alpha\"},"
             "{\"id\":\"A\",\"object\":\"model\",\"created\":%lld,\"owned_by\":\"beta\"},"
             "{\"id\":\"gpt-4o-mini\",\"object\":\"model\",\"created\":%lld,\"owned_by\":\"someone_else\"}]}",
             created, created, created, created);
    CHECK_EQ_BYTES(json, test_router.models_json_length, expected);
    json_span_t value;
    json_type_t type;
    CHECK_EQ_INT(json_object_find((const uint8_t *)json, test_router.models_json_length, "data", &value, &type), 0);
    CHECK_EQ_INT(type, JSON_TYPE_ARRAY);
    test_release();
}

/* The upstream model name as a ready-to-splice JSON string: the configured
 * upstream_model, or the public name when none is set. */
static void test_upstream_model_json_from_config(void) {
    CHECK(test_parse(test_configuration, sizeof test_configuration - 1));
    CHECK(test_build());
    static const char *const expected[] = {"\"gpt-4o-2024-08-06\"", "\"local/small:v1.2\"", "\"a-upstream\"",
                                           "\"gpt-4o-mini\""};
    for (uint32_t index = 0; index < 4; index++) {
        const router_route_t *route = &test_router.models[index].routes[0];
        CHECK_EQ_BYTES(route->upstream_model_json, route->upstream_model_json_length, expected[index]);
    }
    test_release();
}

/* Checks that route's upstream_model_json is `expected` exactly, is valid
 * JSON, and decodes back to the model's upstream_model. */
static void test_check_escaped(const router_model_t *model, const char *expected) {
    const router_route_t *route = &model->routes[0];
    CHECK_EQ_BYTES(route->upstream_model_json, route->upstream_model_json_length, expected);
    CHECK_EQ_INT(json_validate((const uint8_t *)route->upstream_model_json, route->upstream_model_json_length, NULL), 0);
    char decoded[CONFIG_UPSTREAM_MODEL_BYTES];
    size_t decoded_length = 0;
    CHECK_EQ_INT(json_string_decode((const uint8_t *)route->upstream_model_json, route->upstream_model_json_length,
                                    decoded, sizeof decoded, &decoded_length),
                 0);
    CHECK_EQ_BYTES(decoded, decoded_length, model->config->routes[0].upstream_model);
}

/* Names outside the config parser's token rule (a future source of routes,
 * or a config edited in memory) are still escaped into valid JSON: quotes
 * and backslashes are escaped, a newline is \n, other control bytes are
 * \u00XX, '/' and UTF-8 pass through; the longest name made only of quotes
 * (255 bytes, each doubled) fits the route's buffer. */
static void test_upstream_model_json_escaping(void) {
    CHECK(test_parse(test_configuration, sizeof test_configuration - 1));
    rw_copy_text(test_config->models[0].routes[0].upstream_model, CONFIG_UPSTREAM_MODEL_BYTES, "a\"b\\c/d\ne\x01\x1f");
    rw_copy_text(test_config->models[1].routes[0].upstream_model, CONFIG_UPSTREAM_MODEL_BYTES, "mod\xc3\xa8le \t tab");
    memset(test_config->models[2].routes[0].upstream_model, '"', CONFIG_UPSTREAM_MODEL_BYTES - 1);
    test_config->models[2].routes[0].upstream_model[CONFIG_UPSTREAM_MODEL_BYTES - 1] = '\0';
    memset(test_config->models[3].routes[0].upstream_model, '\\', CONFIG_UPSTREAM_MODEL_BYTES - 1);
    test_config->models[3].routes[0].upstream_model[CONFIG_UPSTREAM_MODEL_BYTES - 1] = '\0';
    CHECK(test_build());
    test_check_escaped(&test_router.models[0], "\"a\\\"b\\\\c/d\\ne\\u0001\\u001f\"");
    test_check_escaped(&test_router.models[1], "\"mod\xc3\xa8le \\t tab\"");
    static char quotes[2 + 2 * (CONFIG_UPSTREAM_MODEL_BYTES - 1) + 1];
    static char backslashes[sizeof quotes];
    size_t length = 0;
    quotes[length] = '"';
    backslashes[length++] = '"';
    for (int index = 0; index < CONFIG_UPSTREAM_MODEL_BYTES - 1; index++) {
        quotes[length] = '\\';
        backslashes[length++] = '\\';
        quotes[length] = '"';
        backslashes[length++] = '\\';
    }
    quotes[length] = '"';
    backslashes[length++] = '"';
    quotes[length] = '\0';
    backslashes[length] = '\0';
    test_check_escaped(&test_router.models[2], quotes);
    test_check_escaped(&test_router.models[3], backslashes);
    CHECK_EQ_INT(test_router.models[2].routes[0].upstream_model_json_length, 2 + 2 * (CONFIG_UPSTREAM_MODEL_BYTES - 1));
    test_release();
}

/* The most models a configuration may have, each with the longest name:
 * every one is found by its own name, and the list holds each once in order
 * and is valid JSON (its buffer is sized for the worst case). */
static void test_many_models(void) {
    static char text[CONFIG_MODELS_MAX * 200 + 256];
    size_t length = (size_t)snprintf(text, sizeof text, "[upstream u]\nbase_url = http://127.0.0.1:9001\n");
    char names[CONFIG_MODELS_MAX][CONFIG_MODEL_NAME_BYTES];
    for (int index = 0; index < CONFIG_MODELS_MAX; index++) {
        /* 127 bytes: a distinct 3-digit head, then filler. */
        int head = snprintf(names[index], sizeof names[index], "m%03d-", index);
        memset(names[index] + head, 'x', CONFIG_MODEL_NAME_BYTES - 1 - (size_t)head);
        names[index][CONFIG_MODEL_NAME_BYTES - 1] = '\0';
        length += (size_t)snprintf(text + length, sizeof text - length, "[model %s]\nupstream = u\n", names[index]);
    }
    RW_ASSERT(length < sizeof text);
    CHECK(test_parse(text, length));
    CHECK_EQ_INT(test_config->model_count, CONFIG_MODELS_MAX);
    CHECK(test_build());
    uint32_t found = 0;
    for (int index = 0; index < CONFIG_MODELS_MAX; index++) {
        char quoted[CONFIG_MODEL_NAME_BYTES + 2];
        snprintf(quoted, sizeof quoted, "\"%s\"", names[index]);
        const router_model_t *model = test_find(quoted);
        if (model == &test_router.models[index] && strcmp(model->config->name, names[index]) == 0) found++;
    }
    CHECK_EQ_INT(found, CONFIG_MODELS_MAX);
    const char *json = test_router.models_json;
    CHECK_EQ_INT(json_validate((const uint8_t *)json, test_router.models_json_length, NULL), 0);
    const char *cursor = json;
    uint32_t in_order = 0;
    for (int index = 0; index < CONFIG_MODELS_MAX; index++) {
        char id[CONFIG_MODEL_NAME_BYTES + 16];
        snprintf(id, sizeof id, "{\"id\":\"%s\"", names[index]);
        const char *at = strstr(cursor, id);
        if (at == NULL) break;
        /* Once: not again after this place. */
        if (strstr(at + 1, id) == NULL) in_order++;
        cursor = at + 1;
    }
    CHECK_EQ_INT(in_order, CONFIG_MODELS_MAX);
    test_release();
}

int main(void) {
    test_config = calloc(1, sizeof *test_config);
    RW_ASSERT(test_config != NULL);
    RUN_TEST(test_exact_match);
    RUN_TEST(test_unknown_models);
    RUN_TEST(test_escaped_names);
    RUN_TEST(test_models_json);
    RUN_TEST(test_upstream_model_json_from_config);
    RUN_TEST(test_upstream_model_json_escaping);
    RUN_TEST(test_many_models);
    free(test_config);
    return UNIT_REPORT();
}
