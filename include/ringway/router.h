/* Model routing: a public model name to its routes (upstream, the
 * upstream's own model name, priority, weight), from the configuration loaded at start (immutable while the
 * relay runs, so every thread reads it without synchronisation). Also the
 * GET /v1/models body, built once. */
#ifndef RINGWAY_ROUTER_H
#define RINGWAY_ROUTER_H

#include "ringway/common.h"
#include "ringway/config.h"

/* One route of a model, ready for the request path. */
typedef struct router_route {
    uint32_t upstream_index;
    uint32_t priority;
    uint32_t weight;
    /* The upstream model name as a quoted, escaped JSON string, ready to
     * splice into a request body in place of the client's "model" value. */
    char upstream_model_json[2 * CONFIG_UPSTREAM_MODEL_BYTES + 8];
    size_t upstream_model_json_length;
} router_route_t;

/* A public model and its routes, in the configuration's order. */
typedef struct router_model {
    const config_model_t *config;
    uint32_t index; /* in config_t.models */
    uint32_t route_count;
    router_route_t routes[CONFIG_ROUTES_MAX];
} router_model_t;

typedef struct router {
    const config_t *config;
    router_model_t models[CONFIG_MODELS_MAX];
    char *models_json;
    size_t models_json_length;
} router_t;

/* Builds the routes and the model list. Returns 0, or -1 with `error`. */
int router_init(router_t *router, const config_t *config, char *error, size_t error_size);

/* The model a name given as its JSON string value (with quotes, possibly
 * with escapes) names; NULL when the configuration has no such model. */
const router_model_t *router_find(const router_t *router, const uint8_t *quoted_name, size_t length);

#endif
