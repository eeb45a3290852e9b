/* Model routing: a public model name to the upstream and the upstream's own
 * model name, from the configuration loaded at start (immutable while the
 * relay runs, so every thread reads it without synchronisation). Also the
 * GET /v1/models body, built once. */
#ifndef RINGWAY_ROUTER_H
#define RINGWAY_ROUTER_H

#include "ringway/common.h"
#include "ringway/config.h"

typedef struct router_route {
    const config_model_t *model;
    uint32_t upstream_index;
    /* The upstream model name as a quoted, escaped JSON string, ready to
     * splice into a request body in place of the client's "model" value. */
    char upstream_model_json[2 * CONFIG_UPSTREAM_MODEL_BYTES + 8];
    size_t upstream_model_json_length;
} router_route_t;

typedef struct router {
    const config_t *config;
    router_route_t routes[CONFIG_MODELS_MAX];
    char *models_json;
    size_t models_json_length;
} router_t;

/* Builds the routes and the model list. Returns 0, or -1 with `error`. */
int router_init(router_t *router, const config_t *config, char *error, size_t error_size);

/* The route for a model name given as its JSON string value (with quotes,
 * possibly with escapes); NULL when the configuration has no such model. */
const router_route_t *router_find(const router_t *router, const uint8_t *quoted_name, size_t length);

#endif
