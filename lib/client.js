'use strict';
// `hsm-gateway/client` (and `hsm-gateway`): the client now lives in its own package,
// @hsm-gateway/client; this re-export keeps existing imports working.
module.exports = require('@hsm-gateway/client');
