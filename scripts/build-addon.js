#!/usr/bin/env node
// The keyless addon build lives in the client package: client/scripts/build-addon.js (same arguments).
'use strict';
require('../client/scripts/build-addon.js');
