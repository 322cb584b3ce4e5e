// Installed from the packed tarball into an empty project (tests/it/js_client.rs):
// the CommonJS entry receives one message through a real pollgate.
const PollgateClient = require("pollgate-client");
const { PollgateClient: Named } = require("pollgate-client");
if (Named !== PollgateClient) throw new Error("the named export is not the class");
require("./receive.cjs")(PollgateClient, "cjs");
