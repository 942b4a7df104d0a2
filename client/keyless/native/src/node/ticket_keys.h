// Fleet-wide TLS session-ticket keys for Node's tls servers (docs/TICKET-KEYS.md).
//
// A ring holds the keys a server encrypts and decrypts session tickets with: one
// current encryption key and every older (or announced) key whose tickets still
// decrypt. It is installed on a server's SSL_CTX with
// SSL_CTX_set_tlsext_ticket_key_evp_cb, which takes precedence over Node's own
// ticket callback (Node's single key from setTicketKeys()); uninstalling gives the
// server its own key back. The ring checks each key's time windows against this
// machine's clock on every ticket. The session ID context is set by JavaScript
// through Node's own SecureContext (Node 22+ applies it per connection).
//
// Node offers no handle on a server's SSL_CTX: JavaScript creates a throwaway
// server TLS socket on the server's secure context between BeginCapture() and
// Install(), and the ring is installed on the SSL_CTX of the SSL created then.
#ifndef HSMGW_KEYLESS_TICKET_KEYS_H_
#define HSMGW_KEYLESS_TICKET_KEYS_H_

#include <node_api.h>

namespace keyless {

// Adds ticketRing* functions to the addon's exports (see keyless-addon.ts
// TicketRingAddon).
bool RegisterTicketKeyFunctions(napi_env env, napi_value exports);

}  // namespace keyless

#endif  // HSMGW_KEYLESS_TICKET_KEYS_H_
