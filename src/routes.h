/* routes.h - the node's endpoints and WebSocket handlers, for the gateway. */
#ifndef PARLEY_ROUTES_H
#define PARLEY_ROUTES_H

#include "gateway.h"

/* The handlers for srv's gateway (they hold srv; its routes are static). */
gw_handlers_t routes_handlers(server_t *srv);

#endif
