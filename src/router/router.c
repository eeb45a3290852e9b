#include "ringway/router.h"

#include "ringway/http-writer.h"
#include "ringway/json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int router_init(router_t *router, const config_t *config, char *error, size_t error_size) {
    memset(router, 0, sizeof *router);
    router->config = config;
    size_t capacity = 64 + (size_t)config->model_count * (2 * CONFIG_MODEL_NAME_BYTES + CONFIG_OWNED_BY_BYTES * 2 + 96);
    router->models_json = malloc(capacity);
    if (router->models_json == NULL) {
        snprintf(error, error_size, "out of memory for the model list");
        return -1;
    }
    size_t length = (size_t)snprintf(router->models_json, capacity, "{\"object\":\"list\",\"data\":[");
    long long created = (long long)time(NULL);
    for (uint32_t index = 0; index < config->model_count; index++) {
        const config_model_t *model = &config->models[index];
        router_route_t *route = &router->routes[index];
        route->model = model;
        route->upstream_index = model->upstream_index;
        size_t escaped = http_write_json_escaped((uint8_t *)route->upstream_model_json + 1,
                                                 sizeof route->upstream_model_json - 2, model->upstream_model,
                                                 strlen(model->upstream_model));
        RW_ASSERT(escaped > 0);
        route->upstream_model_json[0] = '"';
        route->upstream_model_json[escaped + 1] = '"';
        route->upstream_model_json_length = escaped + 2;

        length += (size_t)snprintf(router->models_json + length, capacity - length, "%s{\"id\":\"", index ? "," : "");
        length += http_write_json_escaped((uint8_t *)router->models_json + length, capacity - length, model->name,
                                          strlen(model->name));
        length += (size_t)snprintf(router->models_json + length, capacity - length,
                                   "\",\"object\":\"model\",\"created\":%lld,\"owned_by\":\"", created);
        length += http_write_json_escaped((uint8_t *)router->models_json + length, capacity - length,
                                          model->owned_by, strlen(model->owned_by));
        length += (size_t)snprintf(router->models_json + length, capacity - length, "\"}");
        RW_ASSERT(length < capacity);
    }
    length += (size_t)snprintf(router->models_json + length, capacity - length, "]}");
    RW_ASSERT(length < capacity);
    router->models_json_length = length;
    return 0;
}

const router_route_t *router_find(const router_t *router, const uint8_t *quoted_name, size_t length) {
    if (length < 2) return NULL;
    const uint8_t *name = quoted_name + 1;
    size_t name_length = length - 2;
    char decoded[CONFIG_MODEL_NAME_BYTES];
    if (memchr(name, '\\', name_length) != NULL) {
        size_t decoded_length = 0;
        if (json_string_decode(quoted_name, length, decoded, sizeof decoded, &decoded_length) != 0) return NULL;
        name = (const uint8_t *)decoded;
        name_length = decoded_length;
    }
    const config_model_t *model = config_find_model(router->config, name, name_length);
    if (model == NULL) return NULL;
    return &router->routes[model - router->config->models];
}
