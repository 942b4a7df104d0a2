// The Node front end of the provider: registration inside Node's own OpenSSL.
#ifndef HSMGW_KEYLESS_NODE_PROVIDER_H_
#define HSMGW_KEYLESS_NODE_PROVIDER_H_

#include <string>

namespace keyless {

// Adds and loads the provider into Node's default library context. Idempotent.
bool RegisterProvider(std::string* error);

}  // namespace keyless

#endif  // HSMGW_KEYLESS_NODE_PROVIDER_H_
