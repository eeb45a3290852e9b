#include "ringway/router.h"

#include "ringway/json.h"
#include "ringway/text.h"

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
    /* Config names are printable ASCII without '"' or '\\', so escaping
     * never grows them: the capacities above cannot overflow. */
    text_buffer_t list = text_buffer_over(router->models_json, capacity);
    text_buffer_text(&list, "{\"object\":\"list\",\"data\":[");
    long long created = (long long)time(NULL);
    for (uint32_t index = 0; index < config->model_count; index++) {
        const config_model_t *model = &config->models[index];
        router_model_t *routed = &router->models[index];
        routed->config = model;
        routed->index = index;
        RW_ASSERT(model->route_count >= 1 && model->route_count <= CONFIG_ROUTES_MAX);
        routed->route_count = model->route_count;
        for (uint32_t at = 0; at < model->route_count; at++) {
            const config_route_t *configured = &model->routes[at];
            router_route_t *route = &routed->routes[at];
            RW_ASSERT(configured->upstream_index < config->upstream_count && configured->weight >= 1);
            route->upstream_index = configured->upstream_index;
            route->priority = configured->priority;
            route->weight = configured->weight;
            text_buffer_t name = text_buffer_over(route->upstream_model_json, sizeof route->upstream_model_json);
            text_buffer_json_string(&name, configured->upstream_model, strlen(configured->upstream_model));
            RW_ASSERT(!name.overflow && name.length > 2);
            route->upstream_model_json_length = name.length;
        }

        text_buffer_text(&list, index ? ",{\"id\":" : "{\"id\":");
        text_buffer_json_string(&list, model->name, strlen(model->name));
        text_buffer_format(&list, ",\"object\":\"model\",\"created\":%lld,\"owned_by\":", created);
        text_buffer_json_string(&list, model->owned_by, strlen(model->owned_by));
        text_buffer_text(&list, "}");
    }
    text_buffer_text(&list, "]}");
    RW_ASSERT(!list.overflow);
    size_t length = list.length;
    router->models_json_length = length;
    return 0;
}

const router_model_t *router_find(const router_t *router, const uint8_t *quoted_name, size_t length) {
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
    return &router->models[model - router->config->models];
}
